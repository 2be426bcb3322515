/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws.h"
#include "dmbyok/log.h"

/* Refresh temporary credentials this long before they expire (the SDKs use 5-15 min). */
#define REFRESH_WINDOW_S  300
#define REFRESH_RETRY_S   30
#define CONTAINER_HOST    "http://169.254.170.2"
#define IMDS_DEFAULT      "http://169.254.169.254"
#define IMDS_TOKEN_TTL    "21600"
#define METADATA_ATTEMPTS 2

void dmbyok_aws_credentials_free(struct aws_credentials *cr)
{
	if (!cr)
		return;
	free(cr->access_key_id);
	dmbyok_secret_free(cr->secret_access_key);
	if (cr->session_token) {
		dmbyok_secure_wipe(cr->session_token, strlen(cr->session_token));
		free(cr->session_token);
	}
	free(cr);
}

void dmbyok_aws_credentials_invalidate(struct aws_credentials_cache *cache)
{
	dmbyok_aws_credentials_free(cache->cached);
	cache->cached = NULL;
	cache->next_refresh = 0;
}

void dmbyok_aws_credentials_cache_done(struct aws_credentials_cache *cache)
{
	if (!cache)
		return;
	dmbyok_aws_credentials_invalidate(cache);
	free(cache->profile);
	cache->profile = NULL;
}

/* Header values must not be able to smuggle in further headers. */
static bool header_safe(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return false;
	return true;
}

static int creds_new(const char *akid, const char *secret, const char *token, time_t expiration,
                     const char *source, struct aws_credentials **ret)
{
	_cleanup_(dmbyok_aws_credentials_freep) struct aws_credentials *cr = NULL;
	size_t n = strlen(secret);

	if (!*akid || !*secret || !header_safe(akid) || !header_safe(secret) ||
	    (token && !header_safe(token)))
		return -EINVAL;
	cr = calloc(1, sizeof(*cr));
	ENSURE_ALLOC(cr);
	cr->access_key_id = strdup(akid);
	ENSURE_ALLOC(cr->access_key_id);
	GUARD(dmbyok_secret_new(n + 1, &cr->secret_access_key));
	memcpy(cr->secret_access_key->data, secret, n);
	cr->secret_access_key->size = n;
	if (token && *token) {
		cr->session_token = strdup(token);
		ENSURE_ALLOC(cr->session_token);
	}
	cr->expiration = expiration;
	cr->source = source;
	*ret = TAKE_PTR(cr);
	return 0;
}

int dmbyok_aws_parse_iso8601(const char *s, time_t *ret)
{
	struct tm tm = {};
	const char *p;
	time_t t;

	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -EINVAL;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (strcmp(p, "Z") && strcmp(p, "+00:00") && strcmp(p, "+0000"))
		return -EINVAL;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*ret = t;
	return 0;
}

static void why_add(char *why, size_t size, const char *what)
{
	size_t n = strlen(why);

	snprintf(why + n, size - n, "%s%s", n ? ", " : "", what);
}

static int from_env(struct aws_credentials **ret)
{
	const char *akid = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN");

	if (!token || !*token)
		token = getenv("AWS_SECURITY_TOKEN");
	if ((!akid || !*akid) && (!secret || !*secret))
		return -ENOENT;
	if (!akid || !*akid || !secret || !*secret)
		return log_debug_errno(ENOKEY, "Only one of AWS_ACCESS_KEY_ID and "
		                               "AWS_SECRET_ACCESS_KEY is set.");
	return creds_new(akid, secret, token, 0, "environment", ret);
}

/* Keys in one section of one file: 0 found, -ENOENT not there. */
static int from_ini(const struct aws_ini *ini, const char *section, const char *source,
                    struct aws_credentials **ret)
{
	const char *akid = dmbyok_aws_ini_get(ini, section, "aws_access_key_id");
	const char *secret = dmbyok_aws_ini_get(ini, section, "aws_secret_access_key");

	if (!akid || !secret || !*akid || !*secret)
		return -ENOENT;
	return creds_new(akid, secret, dmbyok_aws_ini_get(ini, section, "aws_session_token"), 0,
	                 source, ret);
}

static int from_profile(const char *explicit_profile, struct aws_credentials **ret, char *why,
                        size_t why_size)
{
	_cleanup_(dmbyok_aws_ini_freep) struct aws_ini *creds = NULL, *config = NULL;
	_cleanup_free_ char *creds_path = NULL, *config_path = NULL, *section = NULL;
	const char *profile = dmbyok_aws_profile_name(explicit_profile);
	char what[512];
	int r;

	r = dmbyok_aws_credentials_file_path(&creds_path);
	if (r >= 0) {
		r = dmbyok_aws_ini_load(creds_path, &creds);
		if (r < 0 && r != -ENOENT)
			log_debug_errno(r, "Ignoring %s: %s", creds_path, strerror(-r));
	}
	r = dmbyok_aws_config_file_path(&config_path);
	if (r >= 0) {
		r = dmbyok_aws_ini_load(config_path, &config);
		if (r < 0 && r != -ENOENT)
			log_debug_errno(r, "Ignoring %s: %s", config_path, strerror(-r));
	}
	snprintf(what, sizeof(what), "profile '%s' in %s and %s", profile,
	         creds_path ? creds_path : "(no credentials file)",
	         config_path ? config_path : "(no config file)");
	why_add(why, why_size, what);

	r = from_ini(creds, profile, "profile", ret);
	if (r != -ENOENT)
		return r;
	GUARD(dmbyok_aws_config_section(profile, &section));
	r = from_ini(config, section, "profile", ret);
	if (r != -ENOENT)
		return r;

	if (dmbyok_aws_ini_get(config, section, "role_arn") ||
	    dmbyok_aws_ini_get(config, section, "credential_process") ||
	    dmbyok_aws_ini_get(config, section, "sso_session") ||
	    dmbyok_aws_ini_get(config, section, "sso_start_url"))
		log_notice("Profile '%s' uses role assumption, SSO or a credential process, "
		           "which dmbyok does not support; export the credentials instead.",
		           profile);
	if (explicit_profile && *explicit_profile && !dmbyok_aws_ini_has_section(creds, profile) &&
	    !dmbyok_aws_ini_has_section(config, section)) {
		snprintf(why, why_size, "The AWS profile '%s' does not exist in %s or %s.", profile,
		         creds_path ? creds_path : "-", config_path ? config_path : "-");
		return -ENOKEY;
	}
	return -ENOENT;
}

/* Credentials JSON of the container and instance metadata endpoints. */
int dmbyok_aws_credentials_from_json(struct secret *body, const char *source,
                                     struct aws_credentials **ret)
{
	_cleanup_secret_ struct secret *secret = NULL;
	json_object *j, *akid, *token, *exp, *code;
	time_t expiration = 0;
	int r;

	r = dmbyok_aws_json_take_string(body, "SecretAccessKey", &secret);
	if (r < 0)
		return r == -ENOENT ? -EPROTO : r;
	j = json_tokener_parse((const char *)body->data);
	if (!j || !json_object_is_type(j, json_type_object)) {
		r = -EPROTO;
		goto out;
	}
	if (json_object_object_get_ex(j, "Code", &code) &&
	    strcmp(json_object_get_string(code), "Success") != 0) {
		r = log_debug_errno(EPROTO, "Metadata credentials not ready: %s",
		                    json_object_get_string(code));
		goto out;
	}
	if (!json_object_object_get_ex(j, "AccessKeyId", &akid) ||
	    !json_object_is_type(akid, json_type_string)) {
		r = -EPROTO;
		goto out;
	}
	if (!json_object_object_get_ex(j, "Token", &token) ||
	    !json_object_is_type(token, json_type_string))
		token = NULL;
	if (json_object_object_get_ex(j, "Expiration", &exp) &&
	    dmbyok_aws_parse_iso8601(json_object_get_string(exp), &expiration) < 0) {
		r = log_debug_errno(EPROTO, "Bad Expiration in %s credentials.", source);
		goto out;
	}
	/* Temporary credentials always expire; without a date, refresh them regularly. */
	if (!expiration)
		expiration = time(NULL) + 3600;
	r = creds_new(json_object_get_string(akid), (const char *)secret->data,
	              token ? json_object_get_string(token) : NULL, expiration, source, ret);
	if (r == -EINVAL)
		r = -EPROTO;
out:
	json_object_put(j);
	return r;
}

/* Metadata endpoints: short timeouts, one retry, never a proxy. */
static int metadata_request(struct aws_http *h, const char *method, const char *url,
                            const char *const *headers, struct aws_http_response *ret)
{
	const char *detail = NULL;
	int r = -EIO;

	for (unsigned attempt = 1; attempt <= METADATA_ATTEMPTS; attempt++) {
		r = dmbyok_aws_http_perform(h,
		                            &(struct aws_http_request){
		                                .method = method,
		                                .url = url,
		                                .headers = headers,
		                                .timeout_ms = AWS_METADATA_TIMEOUT_MS,
		                                .connect_timeout_ms = AWS_METADATA_TIMEOUT_MS,
		                                .no_proxy = true,
		                            },
		                            ret, &detail);
		if (r >= 0 && ret->status < 500)
			return 0;
		if (r >= 0) {
			r = -EREMOTEIO;
			dmbyok_aws_http_response_done(ret);
		}
		log_debug("%s %s: %s", method, url, detail ? detail : "server error");
	}
	return r;
}

/* Plain http to a container endpoint only where AWS's own agents listen. */
static bool container_host_allowed(const char *url)
{
	static const char *const hosts[] = {
		"http://169.254.170.2/",
		"http://169.254.170.23/",
		"http://[fd00:ec2::23]/",
	};

	if (!strncasecmp(url, "https://", 8) || dmbyok_aws_url_is_loopback(url))
		return true;
	for (size_t i = 0; i < ELEMENTSOF(hosts); i++) {
		size_t n = strlen(hosts[i]) - 1;

		if (!strncasecmp(url, hosts[i], n) && (url[n] == '/' || url[n] == ':'))
			return true;
	}
	return false;
}

static int read_token_file(const char *path, char **ret)
{
	_cleanup_free_ char *s = NULL;
	FILE *f;
	size_t n;

	f = fopen(path, "re");
	if (!f)
		return log_debug_errno(errno, "Cannot open %s: %m", path);
	s = calloc(1, 16384);
	if (!s) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(s, 1, 16383, f);
	fclose(f);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	*ret = TAKE_PTR(s);
	return 0;
}

static int from_container(struct aws_http *h, struct aws_credentials **ret, char *why,
                          size_t why_size)
{
	const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *token_file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *headers[2] = {};
	_cleanup_free_ char *url = NULL, *token = NULL, *auth = NULL;
	struct aws_http_response resp = {};
	int r;

	why_add(why, why_size, "container endpoint");
	if (rel && *rel) {
		if (asprintf(&url, "%s%s%s", CONTAINER_HOST, *rel == '/' ? "" : "/", rel) < 0)
			return -ENOMEM;
	} else if (full && *full) {
		if (!container_host_allowed(full))
			return log_debug_errno(EINVAL,
			                       "Refusing container credentials over plain "
			                       "http from %s.",
			                       full);
		url = strdup(full);
		ENSURE_ALLOC(url);
	} else {
		return -ENOENT;
	}

	if (token_file && *token_file)
		GUARD(read_token_file(token_file, &token));
	else if (getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
		token = strdup(getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
		ENSURE_ALLOC(token);
	}
	if (token && *token) {
		ENSURE(header_safe(token), EINVAL);
		if (asprintf(&auth, "Authorization: %s", token) < 0)
			return -ENOMEM;
		headers[0] = auth;
	}

	r = metadata_request(h, "GET", url, headers, &resp);
	if (r < 0) {
		snprintf(why, why_size, "Cannot fetch container credentials from %s: %s", url,
		         strerror(-r));
		return r;
	}
	if (resp.status != 200) {
		snprintf(why, why_size, "The container credentials endpoint %s answered HTTP %ld.",
		         url, resp.status);
		dmbyok_aws_http_response_done(&resp);
		return -EKEYREJECTED;
	}
	r = dmbyok_aws_credentials_from_json(resp.body, "container", ret);
	dmbyok_aws_http_response_done(&resp);
	if (r < 0)
		snprintf(why, why_size, "Malformed container credentials from %s.", url);
	return r;
}

static int from_imds(struct aws_http *h, struct aws_credentials **ret, char *why, size_t why_size)
{
	const char *disabled = getenv("AWS_EC2_METADATA_DISABLED");
	const char *endpoint = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	_cleanup_free_ char *base = NULL, *url = NULL, *token_header = NULL, *role = NULL;
	struct aws_http_response resp = {};
	const char *headers[2] = {};
	size_t n;
	int r;

	if (disabled && !strcasecmp(disabled, "true"))
		return -ENOENT;
	why_add(why, why_size, "EC2 instance metadata");

	base = strdup(endpoint && *endpoint ? endpoint : IMDS_DEFAULT);
	ENSURE_ALLOC(base);
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		base[--n] = '\0';

	/* IMDSv2: a session token first; its absence means we are not on EC2. */
	if (asprintf(&url, "%s/latest/api/token", base) < 0)
		return -ENOMEM;
	headers[0] = "X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL;
	r = metadata_request(h, "PUT", url, headers, &resp);
	if (r < 0 || resp.status != 200) {
		log_debug("No IMDSv2 token from %s (%s).", url,
		          r < 0 ? strerror(-r) : "HTTP error");
		dmbyok_aws_http_response_done(&resp);
		return -ENOENT;
	}
	resp.body->data[strcspn((char *)resp.body->data, "\r\n")] = '\0';
	r = asprintf(&token_header, "X-aws-ec2-metadata-token: %s", (char *)resp.body->data);
	dmbyok_aws_http_response_done(&resp);
	if (r < 0)
		return -ENOMEM;
	headers[0] = token_header;

	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/", base) < 0)
		return -ENOMEM;
	r = metadata_request(h, "GET", url, headers, &resp);
	if (r < 0 || resp.status != 200) {
		dmbyok_aws_http_response_done(&resp);
		log_debug("The instance has no IAM role (%s).", url);
		return -ENOENT;
	}
	resp.body->data[strcspn((char *)resp.body->data, "\r\n")] = '\0';
	role = strdup((char *)resp.body->data);
	dmbyok_aws_http_response_done(&resp);
	ENSURE_ALLOC(role);
	if (!*role || strchr(role, '/') || strchr(role, '?') || strchr(role, '#'))
		return -ENOENT;

	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/%s", base, role) < 0)
		return -ENOMEM;
	r = metadata_request(h, "GET", url, headers, &resp);
	if (r < 0 || resp.status != 200) {
		dmbyok_aws_http_response_done(&resp);
		snprintf(why, why_size, "Cannot fetch role %s credentials from instance metadata.",
		         role);
		return r < 0 ? r : -EKEYREJECTED;
	}
	r = dmbyok_aws_credentials_from_json(resp.body, "imds", ret);
	dmbyok_aws_http_response_done(&resp);
	if (r < 0)
		snprintf(why, why_size, "Malformed instance metadata credentials for role %s.",
		         role);
	return r;
}

/* The chain, in the AWS CLI's order. -ENOENT from a source means "try the next one". */
static int resolve(struct aws_credentials_cache *cache, struct aws_http *h,
                   struct aws_credentials **ret, char *why, size_t why_size)
{
	char tried[768] = "";
	int r;

	/* An explicitly chosen profile beats the environment, as `aws --profile` does. */
	if (!cache->profile) {
		why_add(tried, sizeof(tried), "environment variables");
		r = from_env(ret);
		if (r != -ENOENT) {
			if (r == -ENOKEY)
				snprintf(why, why_size,
				         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
				         "must be set together.");
			return r;
		}
	}

	r = from_profile(cache->profile, ret, tried, sizeof(tried));
	if (r != -ENOENT) {
		if (r == -ENOKEY)
			snprintf(why, why_size, "%s", tried);
		return r;
	}

	why[0] = '\0';
	r = from_container(h, ret, why, why_size);
	if (r != -ENOENT)
		return r;
	why_add(tried, sizeof(tried), "container endpoint");

	why[0] = '\0';
	r = from_imds(h, ret, why, why_size);
	if (r != -ENOENT)
		return r;
	if (!getenv("AWS_EC2_METADATA_DISABLED") ||
	    strcasecmp(getenv("AWS_EC2_METADATA_DISABLED"), "true"))
		why_add(tried, sizeof(tried), "EC2 instance metadata");

	snprintf(why, why_size, "No AWS credentials found (tried: %s).", tried);
	return -ENOKEY;
}

int dmbyok_aws_credentials_get(struct aws_credentials_cache *cache, struct aws_http *h,
                               const struct aws_credentials **ret, char *why, size_t why_size)
{
	struct aws_credentials *fresh = NULL;
	time_t now = time(NULL);
	int r;

	why[0] = '\0';
	if (cache->cached &&
	    (cache->cached->expiration == 0 || now + REFRESH_WINDOW_S < cache->cached->expiration ||
	     (now < cache->next_refresh && now < cache->cached->expiration))) {
		*ret = cache->cached;
		return 0;
	}

	r = resolve(cache, h, &fresh, why, why_size);
	if (r < 0) {
		if (!why[0])
			snprintf(why, why_size, "Cannot load AWS credentials: %s", strerror(-r));
		/* A refresh that fails early is no reason to drop still-valid credentials. */
		if (cache->cached && now < cache->cached->expiration) {
			log_warning("Cannot refresh AWS credentials, using the current ones until "
			            "they expire: %s",
			            why);
			cache->next_refresh = now + REFRESH_RETRY_S;
			*ret = cache->cached;
			return 0;
		}
		return r;
	}

	log_debug("Using AWS credentials from %s (access key %s).", fresh->source,
	          fresh->access_key_id);
	dmbyok_aws_credentials_free(cache->cached);
	cache->cached = fresh;
	cache->next_refresh = 0;
	*ret = fresh;
	return 0;
}
