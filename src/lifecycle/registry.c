/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "dmbyok/log.h"
#include "dmbyok/kms.h"
#include "registry.h"
#include "runtime.h"

static int entry_path(const char *name, char **ret)
{
	ENSURE(!strchr(name, '/') && strcmp(name, ".") && strcmp(name, ".."), EINVAL);
	if (asprintf(ret, "%s/mappings/%s.json", dmbyok_runtime_dir(), name) < 0)
		return -ENOMEM;
	return 0;
}

void dmbyok_registry_entry_done(struct registry_entry *e)
{
	free(e->name);
	free(e->device);
	free(e->header);
	free(e->volume_uuid);
	free(e->key_id);
	free(e->key_arn);
	free(e->grant_id);
	*e = (struct registry_entry){ 0 };
}

int dmbyok_registry_save(const struct registry_entry *e)
{
	_cleanup_free_ char *path = NULL, *tmp = NULL, *dir = NULL;
	json_object *o;
	const char *s;
	int fd, r = 0;

	GUARD(entry_path(e->name, &path));
	GUARD(dmbyok_runtime_subdir("mappings", &dir));
	if (asprintf(&tmp, "%s/.%s.XXXXXX", dir, e->name) < 0)
		return -ENOMEM;

	o = json_object_new_object();
	ENSURE_ALLOC(o);
	json_object_object_add(o, "name", json_object_new_string(e->name));
	json_object_object_add(o, "device", json_object_new_string(e->device));
	if (e->header)
		json_object_object_add(o, "header", json_object_new_string(e->header));
	json_object_object_add(o, "volume_uuid", json_object_new_string(e->volume_uuid));
	json_object_object_add(o, "key_id", json_object_new_string(e->key_id));
	json_object_object_add(o, "key_arn", json_object_new_string(e->key_arn));
	if (e->grant_id)
		json_object_object_add(o, "grant_id", json_object_new_string(e->grant_id));
	if (e->frozen)
		json_object_object_add(o, "frozen", json_object_new_boolean(1));
	if (e->torn_down) {
		json_object_object_add(o, "torn_down", json_object_new_boolean(1));
		json_object_object_add(o, "flags", json_object_new_int64(e->flags));
	}
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);

	/*
	 * A fresh, exclusively created temporary name (two writers never share one), then an
	 * atomic rename: a reader sees the old record or the new one, never half of one.
	 */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s) || fsync(fd) < 0 ||
	    rename(tmp, path) < 0)
		r = negative_errno();
	if (fd >= 0)
		close(fd);
	json_object_put(o);
	if (r < 0 && fd >= 0)
		(void)unlink(tmp);
	return r;
}

static char *dup_member(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return strdup(json_object_get_string(v));
}

int dmbyok_registry_load(const char *name, struct registry_entry *ret)
{
	_cleanup_free_ char *path = NULL;
	struct registry_entry e = { 0 };
	json_object *o, *v;
	int fd;

	GUARD(entry_path(name, &path));
	/* Never follow a symlink planted in place of a record. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT
		                       : log_warning_errno(errno, "Ignoring record %s: %m", path);
	o = json_object_from_fd(fd);
	close(fd);
	if (!o)
		return log_warning_errno(EUCLEAN, "Ignoring unreadable record %s.", path);
	e.name = dup_member(o, "name");
	e.device = dup_member(o, "device");
	e.header = dup_member(o, "header");
	e.volume_uuid = dup_member(o, "volume_uuid");
	e.key_id = dup_member(o, "key_id");
	e.key_arn = dup_member(o, "key_arn");
	e.grant_id = dup_member(o, "grant_id");
	if (e.grant_id && !dmbyok_kms_grant_id_valid(e.grant_id)) {
		dmbyok_registry_entry_done(&e);
		json_object_put(o);
		return log_warning_errno(EUCLEAN, "Ignoring record %s: a malformed grant id.",
		                         path);
	}
	e.frozen = json_object_object_get_ex(o, "frozen", &v) && json_object_get_boolean(v);
	e.torn_down = json_object_object_get_ex(o, "torn_down", &v) && json_object_get_boolean(v);
	if (json_object_object_get_ex(o, "flags", &v))
		e.flags = (uint32_t)json_object_get_int64(v);
	json_object_put(o);
	if (!e.name || !e.device || !e.volume_uuid) {
		dmbyok_registry_entry_done(&e);
		return log_warning_errno(EUCLEAN, "Ignoring incomplete record %s.", path);
	}
	*ret = e;
	return 0;
}

int dmbyok_registry_remove(const char *name)
{
	_cleanup_free_ char *path = NULL;

	GUARD(entry_path(name, &path));
	if (unlink(path) < 0 && errno != ENOENT)
		return negative_errno();
	return 0;
}

int dmbyok_registry_list(char ***ret_names)
{
	_cleanup_free_ char *dir = NULL;
	char **l = NULL, **t;
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	GUARD(dmbyok_runtime_subdir("mappings", &dir));
	d = opendir(dir);
	if (!d)
		return negative_errno();
	l = calloc(1, sizeof(char *));
	while (l && (de = readdir(d))) {
		size_t len = strlen(de->d_name);

		/* Temporaries of a save in progress start with a dot. */
		if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		t = realloc(l, (n + 2) * sizeof(char *));
		if (!t || !(t[n] = strndup(de->d_name, len - 5))) {
			l = t ? t : l;
			l[n] = NULL;
			dmbyok_strv_free(l);
			l = NULL;
			break;
		}
		l = t;
		l[++n] = NULL;
	}
	closedir(d);
	if (!l)
		return -ENOMEM;
	*ret_names = l;
	return 0;
}
