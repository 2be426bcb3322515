/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aws.h"
#include "../kms-util.h"
#include "dmbyok/log.h"

/*
 * The credential chain of the AWS CLI v2 (botocore's create_credential_resolver), in order:
 *   1. environment keys (not when a profile is given explicitly)
 *   2. the profile's role_arn with source_profile or credential_source (AssumeRole)
 *   3. web identity: AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN, or the profile's keys
 *   4. SSO (refused: not supported)
 *   5. static keys of the profile in the credentials file
 *   6. the profile's credential_process
 *   7. static keys of the profile in the config file
 *   8. the container endpoint (AWS_CONTAINER_CREDENTIALS_*)
 *   9. EC2 instance metadata (IMDSv2)
 * A source that is configured is final: its failure is the answer, never a quiet switch to
 * the next source (and so to another identity). -ENOENT inside means "not configured".
 */

/* Refresh temporary credentials this long before they expire (the SDKs use 5-15 min). */
#define REFRESH_WINDOW_S      300
#define REFRESH_RETRY_S       30
#define CONTAINER_HOST        "http://169.254.170.2"
#define IMDS_DEFAULT          "http://169.254.169.254"
#define IMDS_TOKEN_TTL        "21600"
#define TOKEN_FILE_MAX        16384
#define ASSUME_ROLE_DEPTH_MAX 8

struct resolve_ctx {
	struct kms_http *http;
	struct aws_shared_config files;
	const char *explicit_profile; /* --profile: environment keys are not consulted */
	char *region;                 /* for STS; NULL: the global endpoint */
	char *why;
	size_t why_size;
};

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

/* From strings that already live in locked memory (INI text) or the environment. */
static int creds_from_strings(const char *akid, const char *secret, const char *token,
                              const char *source, struct aws_credentials **ret)
{
	_cleanup_secret_ struct secret *s = NULL, *t = NULL;

	GUARD(dmbyok_aws_secret_strndup(secret, strlen(secret), &s));
	if (token && *token)
		GUARD(dmbyok_aws_secret_strndup(token, strlen(token), &t));
	return dmbyok_aws_credentials_new(akid, TAKE_PTR(s), TAKE_PTR(t), 0, source, ret);
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static int fail(struct resolve_ctx *ctx, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(struct resolve_ctx *ctx, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->why, ctx->why_size, fmt, ap);
	va_end(ap);
	return r;
}

/* Reads a small token file into locked memory, trailing white space dropped. */
static int read_token_file(const char *path, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	size_t n = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	r = dmbyok_secret_new(TOKEN_FILE_MAX, &s);
	while (r >= 0 && n < TOKEN_FILE_MAX - 1) {
		ssize_t k = read(fd, s->data + n, TOKEN_FILE_MAX - 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			r = -errno;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	if (r < 0)
		return r;
	while (n > 0 && isspace(s->data[n - 1]))
		n--;
	s->data[n] = '\0';
	s->size = n;
	*ret = TAKE_PTR(s);
	return 0;
}

static int from_env(struct resolve_ctx *ctx, struct aws_credentials **ret)
{
	const char *akid = env_nonempty("AWS_ACCESS_KEY_ID");
	const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
	const char *token = env_nonempty("AWS_SESSION_TOKEN");

	if (!token)
		token = env_nonempty("AWS_SECURITY_TOKEN");
	if (!akid && !secret)
		return -ENOENT;
	if (!akid || !secret)
		return fail(ctx, -ENOKEY,
		            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together.");
	return creds_from_strings(akid, secret, token, "environment", ret);
}

/* Static keys of a profile in one file: -ENOENT when it has no aws_access_key_id. */
static int from_static(struct resolve_ctx *ctx, const char *profile, bool creds_file,
                       struct aws_credentials **ret)
{
	const char *(*get)(const struct aws_shared_config *, const char *, const char *) =
	    creds_file ? dmbyok_aws_profile_get_creds_file : dmbyok_aws_profile_get_config_file;
	const char *akid = get(&ctx->files, profile, "aws_access_key_id");
	const char *secret = get(&ctx->files, profile, "aws_secret_access_key");
	const char *path = creds_file ? ctx->files.creds_path : ctx->files.config_path;
	int r;

	if (!akid)
		return -ENOENT;
	if (!*akid || !secret || !*secret)
		return fail(ctx, -ENOKEY,
		            "Profile '%s' in %s has aws_access_key_id but no "
		            "aws_secret_access_key.",
		            profile, path);
	r = creds_from_strings(akid, secret, get(&ctx->files, profile, "aws_session_token"),
	                       "profile", ret);
	if (r == -EINVAL)
		return fail(ctx, r, "Profile '%s' in %s has unusable keys.", profile, path);
	return r;
}

/* ---- metadata endpoints ---- */

struct metadata_opts {
	unsigned timeout_ms;
	unsigned attempts;
};

/* AWS_METADATA_SERVICE_TIMEOUT/_NUM_ATTEMPTS, else the profile's keys; botocore: 1 s, 1. */
static void metadata_opts(struct resolve_ctx *ctx, const char *profile, struct metadata_opts *o)
{
	const char *t = env_nonempty("AWS_METADATA_SERVICE_TIMEOUT");
	const char *a = env_nonempty("AWS_METADATA_SERVICE_NUM_ATTEMPTS");
	double seconds;
	long n;

	if (!t)
		t = dmbyok_aws_profile_get(&ctx->files, profile, "metadata_service_timeout");
	if (!a)
		a = dmbyok_aws_profile_get(&ctx->files, profile, "metadata_service_num_attempts");
	o->timeout_ms = AWS_METADATA_TIMEOUT_MS;
	o->attempts = 1;
	if (t && sscanf(t, "%lf", &seconds) == 1 && seconds > 0 && seconds <= 600)
		o->timeout_ms = (unsigned)(seconds * 1000);
	if (a && sscanf(a, "%ld", &n) == 1 && n >= 1 && n <= 20)
		o->attempts = (unsigned)n;
}

/* Metadata endpoints: short timeouts, never a proxy. 5xx and transport errors retried. */
static int metadata_request(struct kms_http *h, const struct metadata_opts *o, const char *method,
                            const char *url, const char *const *headers,
                            const struct secret *const *secret_headers,
                            struct kms_http_response *ret, const char **ret_detail)
{
	const char *detail = NULL;
	int r = -EIO;

	for (unsigned attempt = 1; attempt <= o->attempts; attempt++) {
		r = dmbyok_kms_http_perform(h,
		                            &(struct kms_http_request){
		                                .method = method,
		                                .url = url,
		                                .headers = headers,
		                                .secret_headers = secret_headers,
		                                .timeout_ms = o->timeout_ms,
		                                .connect_timeout_ms = o->timeout_ms,
		                                .no_proxy = true,
		                            },
		                            ret, &detail);
		if (r >= 0 && ret->status < 500)
			return 0;
		if (r >= 0) {
			r = -EREMOTEIO;
			detail = "server error";
			dmbyok_kms_http_response_done(ret);
		}
		log_debug("%s %s (attempt %u/%u): %s", method, url, attempt, o->attempts,
		          detail ? detail : dmbyok_strerror(r));
	}
	*ret_detail = detail ? detail : dmbyok_strerror(r);
	return r;
}

/* GET one set of temporary credentials from a metadata endpoint (container or IMDS). */
static int fetch_credentials(struct resolve_ctx *ctx, const struct metadata_opts *o,
                             const char *url, const struct secret *const *secret_headers,
                             const char *source, struct aws_credentials **ret)
{
	struct kms_http_response resp = { 0 };
	const char *detail = NULL;
	int r;

	r = metadata_request(ctx->http, o, "GET", url, NULL, secret_headers, &resp, &detail);
	if (r < 0)
		return fail(ctx, r, "Cannot fetch %s credentials from %s: %s", source, url, detail);
	if (resp.status != 200) {
		long status = resp.status;

		dmbyok_kms_http_response_done(&resp);
		return fail(ctx, -EKEYREJECTED, "The %s credentials endpoint %s answered HTTP %ld.",
		            source, url, status);
	}
	r = dmbyok_aws_credentials_from_json(resp.body, source, ret);
	dmbyok_kms_http_response_done(&resp);
	if (r < 0 && r != -ENOMEM)
		return fail(ctx, r, "Malformed %s credentials from %s.", source, url);
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

	if (!strncasecmp(url, "https://", 8) || dmbyok_kms_url_is_loopback(url))
		return true;
	for (size_t i = 0; i < ELEMENTSOF(hosts); i++) {
		size_t n = strlen(hosts[i]) - 1;

		if (!strncasecmp(url, hosts[i], n) && (url[n] == '/' || url[n] == ':'))
			return true;
	}
	return false;
}

static int from_container(struct resolve_ctx *ctx, const char *profile,
                          struct aws_credentials **ret)
{
	const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *token_file = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *token_env = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	_cleanup_secret_ struct secret *token = NULL, *auth = NULL;
	const struct secret *secret_headers[2] = {};
	_cleanup_free_ char *url = NULL;
	struct metadata_opts o;
	int r;

	if (rel) {
		if (asprintf(&url, "%s%s%s", CONTAINER_HOST, *rel == '/' ? "" : "/", rel) < 0)
			return -ENOMEM;
	} else if (full) {
		if (!container_host_allowed(full))
			return fail(ctx, -EINVAL,
			            "Refusing container credentials over plain http from %s.",
			            full);
		url = strdup(full);
		ENSURE_ALLOC(url);
	} else {
		return -ENOENT;
	}

	/* The token file wins over the variable and must be readable when named. */
	if (token_file) {
		r = read_token_file(token_file, &token);
		if (r < 0)
			return fail(ctx, r == -ENOMEM ? r : -ENOKEY,
			            "Cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s: %s",
			            token_file, strerror(-r));
	} else if (token_env) {
		GUARD(dmbyok_aws_secret_strndup(token_env, strlen(token_env), &token));
	}
	if (token && token->size) {
		if (!dmbyok_aws_header_safe((const char *)token->data, token->size))
			return fail(ctx, -EINVAL,
			            "The container authorization token is malformed.");
		GUARD(dmbyok_kms_http_secret_header("Authorization", (const char *)token->data,
		                                    &auth));
		secret_headers[0] = auth;
	}

	metadata_opts(ctx, profile, &o);
	return fetch_credentials(ctx, &o, url, secret_headers, "container", ret);
}

static bool imds_disabled(void)
{
	const char *v = getenv("AWS_EC2_METADATA_DISABLED");

	return v && !strcasecmp(v, "true");
}

static int from_imds(struct resolve_ctx *ctx, const char *profile, struct aws_credentials **ret)
{
	const char *endpoint = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	_cleanup_free_ char *base = NULL, *url = NULL, *role = NULL;
	_cleanup_secret_ struct secret *token = NULL, *token_header = NULL;
	const char *headers[2] = {}, *detail;
	const struct secret *secret_headers[2] = {};
	struct kms_http_response resp = {};
	struct metadata_opts o;
	size_t n;
	int r;

	if (imds_disabled())
		return -ENOENT;
	if (!endpoint)
		endpoint =
		    dmbyok_aws_profile_get(&ctx->files, profile, "ec2_metadata_service_endpoint");
	metadata_opts(ctx, profile, &o);
	base = strdup(endpoint ? endpoint : IMDS_DEFAULT);
	ENSURE_ALLOC(base);
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		base[--n] = '\0';

	/* IMDSv2: a session token first. */
	if (asprintf(&url, "%s/latest/api/token", base) < 0)
		return -ENOMEM;
	headers[0] = "X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL;
	r = metadata_request(ctx->http, &o, "PUT", url, headers, NULL, &resp, &detail);
	if (r < 0)
		/* Unreachable metadata is an outage (or not EC2), not a lack of credentials. */
		return fail(ctx, r,
		            "No AWS credentials in the environment or the shared files, and the "
		            "EC2 instance metadata service %s is unreachable: %s",
		            base, detail);
	if (resp.status != 200) {
		long status = resp.status;

		dmbyok_kms_http_response_done(&resp);
		return fail(ctx, -ENOKEY,
		            "The EC2 instance metadata service %s refused an IMDSv2 token (HTTP "
		            "%ld); dmbyok does not use IMDSv1.",
		            base, status);
	}
	resp.body->data[strcspn((char *)resp.body->data, "\r\n")] = '\0';
	r = dmbyok_aws_secret_strndup((char *)resp.body->data, strlen((char *)resp.body->data),
	                              &token);
	dmbyok_kms_http_response_done(&resp);
	if (r < 0)
		return r;
	if (!token->size || !dmbyok_aws_header_safe((const char *)token->data, token->size))
		return fail(ctx, -EPROTO, "Malformed IMDSv2 token from %s.", base);
	GUARD(dmbyok_kms_http_secret_header("X-aws-ec2-metadata-token", (const char *)token->data,
	                                    &token_header));
	secret_headers[0] = token_header;

	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/", base) < 0)
		return -ENOMEM;
	r = metadata_request(ctx->http, &o, "GET", url, NULL, secret_headers, &resp, &detail);
	if (r < 0)
		return fail(ctx, r, "Cannot reach the EC2 instance metadata service %s: %s", base,
		            detail);
	if (resp.status != 200) {
		dmbyok_kms_http_response_done(&resp);
		return fail(ctx, -ENOKEY,
		            "No AWS credentials found: this EC2 instance has no IAM "
		            "role (instance profile).");
	}
	resp.body->data[strcspn((char *)resp.body->data, "\r\n")] = '\0';
	role = strdup((char *)resp.body->data);
	dmbyok_kms_http_response_done(&resp);
	ENSURE_ALLOC(role);
	if (!*role || strchr(role, '/') || strchr(role, '?') || strchr(role, '#'))
		return fail(ctx, -EPROTO, "Malformed IAM role name from instance metadata.");

	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/%s", base, role) < 0)
		return -ENOMEM;
	return fetch_credentials(ctx, &o, url, secret_headers, "imds", ret);
}

/* ---- role assumption ---- */

static void session_name_default(char *buf, size_t size)
{
	/* botocore uses botocore-session-EPOCH; ours says who is asking */
	snprintf(buf, size, "dmbyok-session-%lld", (long long)time(NULL));
}

static int parse_duration(struct resolve_ctx *ctx, const char *profile, const char *v,
                          unsigned *ret)
{
	long n;
	char *end;

	*ret = 0;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || n < 1 || n > 43200)
		return fail(ctx, -EINVAL, "Profile '%s': invalid duration_seconds '%s'.", profile,
		            v);
	*ret = (unsigned)n;
	return 0;
}

static int web_identity(struct resolve_ctx *ctx, const char *profile, bool env_allowed,
                        struct aws_credentials **ret)
{
	_cleanup_secret_ struct secret *token = NULL;
	const char *token_file = NULL, *role_arn = NULL, *session = NULL;
	char default_name[64];
	int r;

	/* Each key: the environment first (unless disabled), then the profile. */
	if (env_allowed) {
		token_file = env_nonempty("AWS_WEB_IDENTITY_TOKEN_FILE");
		role_arn = env_nonempty("AWS_ROLE_ARN");
		session = env_nonempty("AWS_ROLE_SESSION_NAME");
	}
	if (!token_file)
		token_file =
		    dmbyok_aws_profile_get(&ctx->files, profile, "web_identity_token_file");
	if (!token_file || !*token_file)
		return -ENOENT;
	if (!role_arn)
		role_arn = dmbyok_aws_profile_get(&ctx->files, profile, "role_arn");
	if (!session)
		session = dmbyok_aws_profile_get(&ctx->files, profile, "role_session_name");
	if (!role_arn || !*role_arn)
		return fail(ctx, -EINVAL,
		            "Web identity is configured (token file %s) but no role: set "
		            "AWS_ROLE_ARN or the profile's role_arn.",
		            token_file);
	r = read_token_file(token_file, &token);
	if (r < 0)
		return fail(ctx, r == -ENOMEM ? r : -ENOKEY,
		            "Cannot read the web identity token file %s: %s", token_file,
		            strerror(-r));
	if (!token->size)
		return fail(ctx, -ENOKEY, "The web identity token file %s is empty.", token_file);
	if (!session || !*session) {
		session_name_default(default_name, sizeof(default_name));
		session = default_name;
	}
	return dmbyok_aws_sts_assume_role_with_web_identity(
	    ctx->http, ctx->region, token,
	    &(struct aws_assume_role){ .role_arn = role_arn, .session_name = session }, ret,
	    ctx->why, ctx->why_size);
}

static bool has_static(struct resolve_ctx *ctx, const char *profile)
{
	return dmbyok_aws_profile_get(&ctx->files, profile, "aws_access_key_id") ||
	       dmbyok_aws_profile_get(&ctx->files, profile, "aws_secret_access_key");
}

static bool has_assume_role(struct resolve_ctx *ctx, const char *profile)
{
	return dmbyok_aws_profile_get(&ctx->files, profile, "role_arn") &&
	       !dmbyok_aws_profile_get(&ctx->files, profile, "web_identity_token_file");
}

static int profile_chain(struct resolve_ctx *ctx, const char *profile, bool env_allowed,
                         struct aws_credentials **ret);

static int assume_role(struct resolve_ctx *ctx, const char *profile, const char **visited,
                       unsigned depth, struct aws_credentials **ret);

static int source_credentials(struct resolve_ctx *ctx, const char *profile, const char **visited,
                              unsigned depth, struct aws_credentials **ret)
{
	const char *source = dmbyok_aws_profile_get(&ctx->files, profile, "source_profile");
	const char *cs = dmbyok_aws_profile_get(&ctx->files, profile, "credential_source");
	int r;

	if (source && cs)
		return fail(ctx, -EINVAL,
		            "The profile '%s' contains both source_profile and credential_source.",
		            profile);
	if (cs) {
		if (!strcasecmp(cs, "Environment"))
			r = from_env(ctx, ret);
		else if (!strcasecmp(cs, "Ec2InstanceMetadata"))
			r = from_imds(ctx, profile, ret);
		else if (!strcasecmp(cs, "EcsContainer"))
			r = from_container(ctx, profile, ret);
		else
			return fail(ctx, -EINVAL,
			            "The credential_source \"%s\" of profile '%s' is not valid "
			            "(Environment, Ec2InstanceMetadata, EcsContainer).",
			            cs, profile);
		if (r == -ENOENT)
			return fail(ctx, -ENOKEY,
			            "No credentials found in credential_source %s referenced in "
			            "profile '%s'.",
			            cs, profile);
		return r;
	}
	if (!source)
		return fail(ctx, -EINVAL,
		            "The profile '%s' has role_arn but neither source_profile nor "
		            "credential_source.",
		            profile);
	if (!dmbyok_aws_profile_exists(&ctx->files, source))
		return fail(
		    ctx, -EINVAL,
		    "The source_profile '%s' referenced in the profile '%s' does not exist.",
		    source, profile);
	for (unsigned i = 0; i < depth; i++)
		/* A profile may name itself to take its own static keys; any other cycle is wrong.
		 */
		if (!strcmp(visited[i], source) &&
		    (strcmp(source, profile) || !has_static(ctx, source)))
			return fail(ctx, -EINVAL,
			            "Infinite loop in the source_profile chain at '%s'.", source);
	if (has_static(ctx, source) || !has_assume_role(ctx, source)) {
		r = profile_chain(ctx, source, false, ret);
		if (r == -ENOENT)
			return fail(ctx, -ENOKEY, "The source profile '%s' must have credentials.",
			            source);
		return r;
	}
	return assume_role(ctx, source, visited, depth, ret);
}

static int assume_role(struct resolve_ctx *ctx, const char *profile, const char **visited,
                       unsigned depth, struct aws_credentials **ret)
{
	_cleanup_(dmbyok_aws_credentials_freep) struct aws_credentials *source = NULL;
	const char *role_arn = dmbyok_aws_profile_get(&ctx->files, profile, "role_arn");
	const char *session = dmbyok_aws_profile_get(&ctx->files, profile, "role_session_name");
	char default_name[64];
	unsigned duration;

	if (depth >= ASSUME_ROLE_DEPTH_MAX)
		return fail(ctx, -EINVAL, "The role chain from profile '%s' is too long.", profile);
	visited[depth++] = profile;
	if (dmbyok_aws_profile_get(&ctx->files, profile, "mfa_serial"))
		return fail(ctx, -EINVAL,
		            "Profile '%s' needs an MFA code (mfa_serial), which an unattended "
		            "host cannot type.",
		            profile);
	GUARD(parse_duration(ctx, profile,
	                     dmbyok_aws_profile_get(&ctx->files, profile, "duration_seconds"),
	                     &duration));
	GUARD(source_credentials(ctx, profile, visited, depth, &source));
	if (!session || !*session) {
		session_name_default(default_name, sizeof(default_name));
		session = default_name;
	}
	log_debug("Assuming role %s (profile '%s') with credentials from %s.", role_arn, profile,
	          source->source);
	return dmbyok_aws_sts_assume_role(
	    ctx->http, ctx->region, source,
	    &(struct aws_assume_role){
	        .role_arn = role_arn,
	        .session_name = session,
	        .external_id = dmbyok_aws_profile_get(&ctx->files, profile, "external_id"),
	        .duration_s = duration,
	    },
	    ret, ctx->why, ctx->why_size);
}

/* botocore's profile providers: web identity, SSO, credentials file, process, config file. */
static int profile_chain(struct resolve_ctx *ctx, const char *profile, bool env_allowed,
                         struct aws_credentials **ret)
{
	static const char *const sso_keys[] = { "sso_start_url", "sso_session", "sso_account_id",
		                                "sso_role_name", "sso_region" };
	const char *process;
	int r;

	r = web_identity(ctx, profile, env_allowed, ret);
	if (r != -ENOENT)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(sso_keys); i++)
		if (dmbyok_aws_profile_get(&ctx->files, profile, sso_keys[i]))
			return fail(
			    ctx, -EINVAL,
			    "Profile '%s' uses AWS SSO (%s), which dmbyok does not support "
			    "(sso not supported): use a role, a credential_process or keys.",
			    profile, sso_keys[i]);
	r = from_static(ctx, profile, true, ret);
	if (r != -ENOENT)
		return r;
	process = dmbyok_aws_profile_get(&ctx->files, profile, "credential_process");
	if (process && *process)
		return dmbyok_aws_credential_process(process, ret, ctx->why, ctx->why_size);
	return from_static(ctx, profile, false, ret);
}

static int resolve(struct aws_credentials_cache *cache, struct kms_http *h,
                   struct aws_credentials **ret, char *why, size_t why_size)
{
	struct resolve_ctx ctx = {
		.http = h,
		.explicit_profile = cache->profile && *cache->profile ? cache->profile : NULL,
		.why = why,
		.why_size = why_size,
	};
	const char *profile = dmbyok_aws_profile_name(cache->profile);
	const char *visited[ASSUME_ROLE_DEPTH_MAX];
	int r;

	r = dmbyok_aws_shared_config_load(&ctx.files, why, why_size);
	if (r < 0)
		return r;
	r = dmbyok_aws_resolve_region(NULL, NULL, cache->profile, &ctx.region);
	if (r < 0 && r != -ENOENT)
		goto out;

	/* A named profile must exist, whatever else is configured (the CLI's ProfileNotFound). */
	if (dmbyok_aws_profile_is_set(cache->profile) &&
	    !dmbyok_aws_profile_exists(&ctx.files, profile)) {
		r = fail(&ctx, -ENOKEY, "The AWS profile '%s' does not exist in %s or %s.", profile,
		         ctx.files.creds_path ? ctx.files.creds_path : "-",
		         ctx.files.config_path ? ctx.files.config_path : "-");
		goto out;
	}

	if (!ctx.explicit_profile) {
		r = from_env(&ctx, ret);
		if (r != -ENOENT)
			goto out;
	}
	if (has_assume_role(&ctx, profile)) {
		r = assume_role(&ctx, profile, visited, 0, ret);
		goto out;
	}
	r = profile_chain(&ctx, profile, !ctx.explicit_profile, ret);
	if (r != -ENOENT)
		goto out;
	r = from_container(&ctx, profile, ret);
	if (r != -ENOENT)
		goto out;
	r = from_imds(&ctx, profile, ret);
	if (r != -ENOENT)
		goto out;
	r = fail(&ctx, -ENOKEY,
	         "No AWS credentials found (tried: environment variables, profile '%s' in %s "
	         "and %s, container endpoint%s).",
	         profile, ctx.files.creds_path ? ctx.files.creds_path : "(no credentials file)",
	         ctx.files.config_path ? ctx.files.config_path : "(no config file)",
	         imds_disabled() ? "; EC2 instance metadata is disabled"
	                         : ", EC2 instance metadata");
out:
	free(ctx.region);
	dmbyok_aws_shared_config_done(&ctx.files);
	return r;
}

static void file_stamp(const char *path, struct aws_file_stamp *ret)
{
	struct stat st;

	*ret = (struct aws_file_stamp){};
	if (!path || stat(path, &st) < 0)
		return;
	*ret = (struct aws_file_stamp){
		.exists = true,
		.dev = st.st_dev,
		.ino = st.st_ino,
		.size = st.st_size,
		.mtime = st.st_mtim,
	};
}

/* Both shared files as they are now: a changed file means rotated keys or a new profile. */
static void files_stamp(struct aws_file_stamp stamps[2])
{
	_cleanup_free_ char *creds = NULL, *config = NULL;

	(void)dmbyok_aws_credentials_file_path(&creds);
	(void)dmbyok_aws_config_file_path(&config);
	file_stamp(creds, &stamps[0]);
	file_stamp(config, &stamps[1]);
}

static bool stamps_equal(const struct aws_file_stamp *a, const struct aws_file_stamp *b)
{
	return a->exists == b->exists &&
	       (!a->exists ||
	        (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	         a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec));
}

static bool cache_fresh(const struct aws_credentials_cache *cache, time_t now)
{
	const struct aws_credentials *cr = cache->cached;
	time_t lifetime, window;

	if (!cr)
		return false;
	if (cr->expiration == 0)
		return true;
	/* Short-lived credentials (tests, tight policies) refresh at half their life. */
	lifetime = cr->expiration - cr->obtained;
	window = lifetime / 2 < REFRESH_WINDOW_S ? lifetime / 2 : REFRESH_WINDOW_S;
	if (now + window < cr->expiration)
		return true;
	return now < cache->next_refresh && now < cr->expiration;
}

int dmbyok_aws_credentials_get(struct aws_credentials_cache *cache, struct kms_http *h,
                               const struct aws_credentials **ret, char *why, size_t why_size)
{
	struct aws_credentials *fresh = NULL;
	struct aws_file_stamp stamps[2];
	time_t now = time(NULL);
	int r;

	why[0] = '\0';
	files_stamp(stamps);
	if (cache->cached && !(stamps_equal(&stamps[0], &cache->stamps[0]) &&
	                       stamps_equal(&stamps[1], &cache->stamps[1]))) {
		log_debug("The AWS shared files changed: resolving credentials again.");
		dmbyok_aws_credentials_invalidate(cache);
	}
	if (cache_fresh(cache, now)) {
		*ret = cache->cached;
		return 0;
	}

	r = resolve(cache, h, &fresh, why, why_size);
	if (r < 0) {
		if (!why[0])
			snprintf(why, why_size, "Cannot load AWS credentials: %s",
			         dmbyok_strerror(r));
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
	memcpy(cache->stamps, stamps, sizeof(stamps));
	*ret = fresh;
	return 0;
}

int dmbyok_aws_get_caller_identity(struct aws_credentials_cache *cache, struct kms_http *h,
                                   char **ret_arn, char **ret_account, char *why, size_t why_size)
{
	_cleanup_free_ char *region = NULL;
	const struct aws_credentials *cr;
	int r;

	GUARD(dmbyok_aws_credentials_get(cache, h, &cr, why, why_size));
	r = dmbyok_aws_resolve_region(NULL, NULL, cache->profile, &region);
	if (r < 0 && r != -ENOENT)
		return r;
	return dmbyok_aws_sts_get_caller_identity(h, region, cr, ret_arn, ret_account, why,
	                                          why_size);
}
