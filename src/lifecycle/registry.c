/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "dmbyok/log.h"
#include "registry.h"

const char *dmbyok_runtime_dir(void)
{
	const char *d = getenv("DMBYOK_RUNTIME_DIR");

	return d && *d ? d : "/run/dmbyok";
}

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
	*e = (struct registry_entry){ 0 };
}

static int mkdir_p(const char *dir)
{
	_cleanup_free_ char *copy = strdup(dir);

	ENSURE_ALLOC(copy);
	for (char *p = copy + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(copy, 0700) < 0 && errno != EEXIST)
				return negative_errno();
			*p = '/';
		}
	if (mkdir(copy, 0700) < 0 && errno != EEXIST)
		return negative_errno();
	return 0;
}

int dmbyok_registry_save(const struct registry_entry *e)
{
	_cleanup_free_ char *path = NULL, *tmp = NULL, *dir = NULL;
	json_object *o;
	const char *s;
	int fd, r = 0;

	GUARD(entry_path(e->name, &path));
	if (asprintf(&dir, "%s/mappings", dmbyok_runtime_dir()) < 0 ||
	    asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	GUARD(mkdir_p(dir));

	o = json_object_new_object();
	ENSURE_ALLOC(o);
	json_object_object_add(o, "name", json_object_new_string(e->name));
	json_object_object_add(o, "device", json_object_new_string(e->device));
	if (e->header)
		json_object_object_add(o, "header", json_object_new_string(e->header));
	json_object_object_add(o, "volume_uuid", json_object_new_string(e->volume_uuid));
	json_object_object_add(o, "key_id", json_object_new_string(e->key_id));
	json_object_object_add(o, "key_arn", json_object_new_string(e->key_arn));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);

	/* Write then rename, so a reader never sees half a record. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s) || fsync(fd) < 0 ||
	    rename(tmp, path) < 0)
		r = negative_errno();
	if (fd >= 0)
		close(fd);
	json_object_put(o);
	if (r < 0)
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
	json_object *o;

	GUARD(entry_path(name, &path));
	if (access(path, F_OK) < 0)
		return -ENOENT;
	o = json_object_from_file(path);
	if (!o)
		return log_warning_errno(EUCLEAN, "Ignoring unreadable record %s.", path);
	e.name = dup_member(o, "name");
	e.device = dup_member(o, "device");
	e.header = dup_member(o, "header");
	e.volume_uuid = dup_member(o, "volume_uuid");
	e.key_id = dup_member(o, "key_id");
	e.key_arn = dup_member(o, "key_arn");
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
