/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "aws.h"
#include "../kms-util.h"
#include "dmbyok/log.h"

#define INI_MAX_SIZE (1U << 20)

static char *strip(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

void dmbyok_aws_ini_free(struct aws_ini *ini)
{
	if (!ini)
		return;
	dmbyok_secret_free(ini->text);
	free(ini->entries);
	free(ini);
}

static int ini_add(struct aws_ini *ini, const char *section, const char *key, const char *value)
{
	struct aws_ini_entry *e;

	e = reallocarray(ini->entries, ini->n_entries + 1, sizeof(*e));
	ENSURE_ALLOC(e);
	ini->entries = e;
	ini->entries[ini->n_entries++] = (struct aws_ini_entry){ section, key, value };
	return 0;
}

/*
 * The dialect of botocore's reader (configparser): `[section]`, `key = value`, comment
 * lines starting with '#' or ';', keys case-insensitive, no inline comments. Indented lines
 * after a key are nested settings (e.g. `s3 =` blocks) which we have no use for.
 */
int dmbyok_aws_ini_parse(struct secret *text, struct aws_ini **ret)
{
	_cleanup_(dmbyok_aws_ini_freep) struct aws_ini *ini = NULL;
	const char *section = NULL;
	char *p, *next;

	ini = calloc(1, sizeof(*ini));
	if (!ini) {
		dmbyok_secret_free(text);
		return -ENOMEM;
	}
	ini->text = text;

	for (p = (char *)text->data; p && *p; p = next) {
		bool indented = *p == ' ' || *p == '\t';
		char *line, *eq;

		next = strchr(p, '\n');
		if (next)
			*next++ = '\0';
		line = strip(p);
		if (*line == '\0' || *line == '#' || *line == ';' || indented)
			continue;

		if (*line == '[') {
			char *end = strrchr(line, ']');

			if (!end)
				return log_debug_errno(EINVAL,
				                       "Malformed section line in INI file.");
			*end = '\0';
			section = strip(line + 1);
			continue;
		}

		eq = strchr(line, '=');
		if (!eq || !section)
			continue; /* botocore would reject the file; ignoring a stray line is kinder
			           */
		*eq = '\0';
		line = strip(line);
		for (char *k = line; *k; k++)
			*k = (char)tolower((unsigned char)*k);
		GUARD(ini_add(ini, section, line, strip(eq + 1)));
	}

	*ret = TAKE_PTR(ini);
	return 0;
}

int dmbyok_aws_ini_load(const char *path, struct aws_ini **ret)
{
	_cleanup_secret_ struct secret *text = NULL;
	int r;

	/* The credentials file holds secret keys: read into locked memory. */
	r = dmbyok_kms_read_secret_file(path, INI_MAX_SIZE + 1, &text);
	if (r == -EINVAL)
		return log_debug_errno(r, "%s is not a regular file of sane size.", path);
	if (r < 0 && r != -ENOENT && r != -ENOMEM)
		return log_debug_errno(r, "Cannot read %s: %s", path, dmbyok_strerror(r));
	if (r < 0)
		return r;
	return dmbyok_aws_ini_parse(TAKE_PTR(text), ret);
}

const char *dmbyok_aws_ini_get(const struct aws_ini *ini, const char *section, const char *key)
{
	const char *found = NULL;

	if (!ini)
		return NULL;
	/* Later definitions win, as with configparser's merged duplicate sections. */
	for (size_t i = 0; i < ini->n_entries; i++)
		if (!strcmp(ini->entries[i].section, section) && !strcmp(ini->entries[i].key, key))
			found = ini->entries[i].value;
	return found;
}

bool dmbyok_aws_ini_has_section(const struct aws_ini *ini, const char *section)
{
	if (!ini)
		return false;
	for (size_t i = 0; i < ini->n_entries; i++)
		if (!strcmp(ini->entries[i].section, section))
			return true;
	return false;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

const char *dmbyok_aws_profile_name(const char *explicit_profile)
{
	const char *p;

	if (explicit_profile && *explicit_profile)
		return explicit_profile;
	p = env_nonempty("AWS_PROFILE");
	if (!p)
		p = env_nonempty("AWS_DEFAULT_PROFILE");
	return p ? p : "default";
}

static int home_path(const char *env, const char *rel, char **ret)
{
	const char *v = env_nonempty(env), *home;
	char *s;

	if (v) {
		s = strdup(v);
	} else {
		home = env_nonempty("HOME");
		if (!home)
			return -ENOENT;
		if (asprintf(&s, "%s/%s", home, rel) < 0)
			s = NULL;
	}
	ENSURE_ALLOC(s);
	*ret = s;
	return 0;
}

int dmbyok_aws_credentials_file_path(char **ret)
{
	return home_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials", ret);
}

int dmbyok_aws_config_file_path(char **ret)
{
	return home_path("AWS_CONFIG_FILE", ".aws/config", ret);
}

int dmbyok_aws_config_section(const char *profile, char **ret)
{
	char *s;

	if (!strcmp(profile, "default"))
		s = strdup(profile);
	else if (asprintf(&s, "profile %s", profile) < 0)
		s = NULL;
	ENSURE_ALLOC(s);
	*ret = s;
	return 0;
}

/* Regions go into a host name and the SigV4 scope: allow only what AWS uses. */
static bool region_valid(const char *r)
{
	if (!*r || strlen(r) > 32)
		return false;
	for (; *r; r++)
		if (!islower((unsigned char)*r) && !isdigit((unsigned char)*r) && *r != '-')
			return false;
	return true;
}

int dmbyok_aws_arn_region(const char *arn, char **ret)
{
	const char *p, *end;
	char *s;

	if (!arn || strncmp(arn, "arn:", 4) != 0)
		return -EINVAL;
	/* arn:PARTITION:SERVICE:REGION:... */
	p = strchr(arn + 4, ':');
	if (!p)
		return -EINVAL;
	p = strchr(p + 1, ':');
	if (!p)
		return -EINVAL;
	p++;
	end = strchr(p, ':');
	if (!end || end == p)
		return -EINVAL;
	s = strndup(p, (size_t)(end - p));
	ENSURE_ALLOC(s);
	if (!region_valid(s)) {
		free(s);
		return -EINVAL;
	}
	*ret = s;
	return 0;
}

static int profile_region(const char *profile, char **ret)
{
	_cleanup_(dmbyok_aws_ini_freep) struct aws_ini *ini = NULL;
	_cleanup_free_ char *path = NULL, *section = NULL;
	const char *v;
	int r;

	GUARD(dmbyok_aws_config_file_path(&path));
	r = dmbyok_aws_ini_load(path, &ini);
	if (r < 0)
		return r;
	GUARD(dmbyok_aws_config_section(dmbyok_aws_profile_name(profile), &section));
	v = dmbyok_aws_ini_get(ini, section, "region");
	if (!v || !*v)
		return -ENOENT;
	*ret = strdup(v);
	ENSURE_ALLOC(*ret);
	return 0;
}

int dmbyok_aws_resolve_region(const char *explicit_region, const char *key_id, const char *profile,
                              char **ret)
{
	_cleanup_free_ char *region = NULL;
	const char *v;
	int r;

	if (explicit_region && *explicit_region) {
		region = strdup(explicit_region);
		ENSURE_ALLOC(region);
	} else if (key_id && dmbyok_aws_arn_region(key_id, &region) >= 0) {
		/* the key says where it lives */
	} else if ((v = env_nonempty("AWS_REGION")) || (v = env_nonempty("AWS_DEFAULT_REGION"))) {
		region = strdup(v);
		ENSURE_ALLOC(region);
	} else {
		r = profile_region(profile, &region);
		if (r == -ENOENT)
			return -ENOENT;
		GUARD(r);
	}

	if (!region_valid(region))
		return log_error_errno(EINVAL, "Invalid AWS region '%s'.", region);
	*ret = TAKE_PTR(region);
	return 0;
}

int dmbyok_aws_endpoint_override(const char *explicit_endpoint, char **ret)
{
	const char *v = explicit_endpoint && *explicit_endpoint ? explicit_endpoint : NULL;

	if (!v)
		v = env_nonempty("AWS_ENDPOINT_URL_KMS");
	if (!v)
		v = env_nonempty("AWS_ENDPOINT_URL");
	if (!v) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(v);
	ENSURE_ALLOC(*ret);
	return 0;
}

int dmbyok_aws_endpoint_url(const char *override, const char *region, char **ret)
{
	char *s;

	if (override) {
		size_t n = strlen(override);

		if (strncasecmp(override, "https://", 8) != 0 &&
		    !(strncasecmp(override, "http://", 7) == 0 &&
		      dmbyok_kms_url_is_loopback(override)))
			return log_error_errno(
			    EINVAL,
			    "KMS endpoint %s must be https:// (plain http is only "
			    "allowed to loopback).",
			    override);
		if (strchr(override, '@'))
			return log_error_errno(EINVAL, "KMS endpoint must not carry credentials.");
		if (asprintf(&s, "%s%s", override, n && override[n - 1] == '/' ? "" : "/") < 0)
			s = NULL;
	} else {
		if (!region)
			return log_error_errno(EINVAL,
			                       "No AWS region: set one with --region, "
			                       "AWS_REGION or the profile, or use a key ARN.");
		if (asprintf(&s, "https://kms.%s.amazonaws.com%s/", region,
		             !strncmp(region, "cn-", 3) ? ".cn" : "") < 0)
			s = NULL;
	}
	ENSURE_ALLOC(s);
	*ret = s;
	return 0;
}

bool dmbyok_aws_profile_is_set(const char *explicit_profile)
{
	return (explicit_profile && *explicit_profile) || env_nonempty("AWS_PROFILE") ||
	       env_nonempty("AWS_DEFAULT_PROFILE");
}

static int load_optional(const char *path, struct aws_ini **ret, char *why, size_t why_size)
{
	int r = dmbyok_aws_ini_load(path, ret);

	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		/* botocore refuses a broken file rather than ignoring what it says */
		snprintf(why, why_size, "Cannot read the AWS file %s: %s", path, strerror(-r));
		return r == -ENOMEM ? r : -EINVAL;
	}
	return 0;
}

int dmbyok_aws_shared_config_load(struct aws_shared_config *ret, char *why, size_t why_size)
{
	struct aws_shared_config sc = {};
	int r;

	r = dmbyok_aws_credentials_file_path(&sc.creds_path);
	if (r >= 0)
		r = load_optional(sc.creds_path, &sc.creds, why, why_size);
	if (r >= 0 || r == -ENOENT)
		r = dmbyok_aws_config_file_path(&sc.config_path);
	if (r >= 0)
		r = load_optional(sc.config_path, &sc.config, why, why_size);
	if (r < 0 && r != -ENOENT) {
		dmbyok_aws_shared_config_done(&sc);
		return r;
	}
	*ret = sc;
	return 0;
}

void dmbyok_aws_shared_config_done(struct aws_shared_config *sc)
{
	if (!sc)
		return;
	dmbyok_aws_ini_free(sc->creds);
	dmbyok_aws_ini_free(sc->config);
	free(sc->creds_path);
	free(sc->config_path);
	*sc = (struct aws_shared_config){};
}

const char *dmbyok_aws_profile_get_creds_file(const struct aws_shared_config *sc,
                                              const char *profile, const char *key)
{
	return dmbyok_aws_ini_get(sc->creds, profile, key);
}

const char *dmbyok_aws_profile_get_config_file(const struct aws_shared_config *sc,
                                               const char *profile, const char *key)
{
	char section[256];
	const char *v = NULL;

	if (!strcmp(profile, "default"))
		v = dmbyok_aws_ini_get(sc->config, "default", key);
	snprintf(section, sizeof(section), "profile %s", profile);
	/* botocore lets [profile default] stand for [default] */
	if (!v)
		v = dmbyok_aws_ini_get(sc->config, section, key);
	return v;
}

const char *dmbyok_aws_profile_get(const struct aws_shared_config *sc, const char *profile,
                                   const char *key)
{
	const char *v = dmbyok_aws_profile_get_creds_file(sc, profile, key);

	return v ? v : dmbyok_aws_profile_get_config_file(sc, profile, key);
}

bool dmbyok_aws_profile_exists(const struct aws_shared_config *sc, const char *profile)
{
	char section[256];

	snprintf(section, sizeof(section), "profile %s", profile);
	return dmbyok_aws_ini_has_section(sc->creds, profile) ||
	       dmbyok_aws_ini_has_section(sc->config, section) ||
	       (!strcmp(profile, "default") && dmbyok_aws_ini_has_section(sc->config, "default"));
}

int dmbyok_aws_sts_endpoint(const char *region, char **ret_url, char **ret_signing_region)
{
	_cleanup_free_ char *url = NULL, *signing = NULL;
	const char *v = env_nonempty("AWS_ENDPOINT_URL_STS");

	if (!v)
		v = env_nonempty("AWS_ENDPOINT_URL");
	if (v) {
		if (strncasecmp(v, "https://", 8) != 0 &&
		    !(strncasecmp(v, "http://", 7) == 0 && dmbyok_kms_url_is_loopback(v)))
			return log_error_errno(EINVAL,
			                       "STS endpoint %s must be https:// (plain http is "
			                       "only allowed to loopback).",
			                       v);
		if (strchr(v, '@'))
			return log_error_errno(EINVAL, "STS endpoint must not carry credentials.");
		url = strdup(v);
	} else if (region && region_valid(region)) {
		if (asprintf(&url, "https://sts.%s.amazonaws.com%s/", region,
		             !strncmp(region, "cn-", 3) ? ".cn" : "") < 0)
			url = NULL;
	} else {
		url = strdup("https://sts.amazonaws.com/");
	}
	ENSURE_ALLOC(url);
	signing = strdup(region && region_valid(region) ? region : "us-east-1");
	ENSURE_ALLOC(signing);
	*ret_url = TAKE_PTR(url);
	*ret_signing_region = TAKE_PTR(signing);
	return 0;
}
