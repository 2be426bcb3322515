/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "aws.h"
#include "dmbyok/log.h"

/* STS's Query API: form-encoded POST, XML answers. */
#define STS_VERSION      "2011-06-15"
#define STS_CONTENT_TYPE "Content-Type: application/x-www-form-urlencoded; charset=utf-8"
#define STS_ATTEMPTS     3U

static const char *xml_find(const char *xml, const char *tag, const char **ret_end)
{
	char open[96], close[96];
	const char *b, *e;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	b = strstr(xml, open);
	if (!b)
		return NULL;
	b += strlen(open);
	e = strstr(b, close);
	if (!e)
		return NULL;
	*ret_end = e;
	return b;
}

/* Decodes the five predefined entities in place; others are left as they are. */
static void xml_unescape(char *s)
{
	static const struct {
		const char *entity;
		char c;
	} map[] = { { "&amp;", '&' },
		    { "&lt;", '<' },
		    { "&gt;", '>' },
		    { "&quot;", '"' },
		    { "&apos;", '\'' } };
	char *w = s;

	for (const char *p = s; *p;) {
		size_t i;

		for (i = 0; i < ELEMENTSOF(map); i++)
			if (!strncmp(p, map[i].entity, strlen(map[i].entity)))
				break;
		if (i < ELEMENTSOF(map)) {
			*w++ = map[i].c;
			p += strlen(map[i].entity);
		} else {
			*w++ = *p++;
		}
	}
	*w = '\0';
}

int dmbyok_aws_xml_text(const char *xml, const char *tag, char **ret)
{
	const char *b, *e;
	char *s;

	b = xml_find(xml, tag, &e);
	if (!b)
		return -ENOENT;
	s = strndup(b, (size_t)(e - b));
	ENSURE_ALLOC(s);
	xml_unescape(s);
	*ret = s;
	return 0;
}

/* A secret element straight from locked memory into locked memory (tokens need no entities). */
static int xml_secret(const struct secret *body, const char *tag, struct secret **ret)
{
	const char *b, *e;

	b = xml_find((const char *)body->data, tag, &e);
	if (!b || e == b || memchr(b, '&', (size_t)(e - b)))
		return -EPROTO;
	return dmbyok_aws_secret_strndup(b, (size_t)(e - b), ret);
}

/* Appends "&name=value" percent-encoded (RFC 3986 unreserved kept) to a locked buffer. */
static int form_add(struct secret *form, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t need = strlen(name) + 2 + 3 * strlen(value) + 1;
	uint8_t *w;

	if (form->size + need > form->capacity)
		return -E2BIG;
	w = form->data + form->size;
	if (form->size)
		*w++ = '&';
	for (const char *p = name; *p; p++)
		*w++ = (uint8_t)*p;
	*w++ = '=';
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
			*w++ = *p;
		} else {
			*w++ = '%';
			*w++ = (uint8_t)hex[*p >> 4];
			*w++ = (uint8_t)hex[*p & 15];
		}
	}
	*w = '\0';
	form->size = (size_t)(w - form->data);
	return 0;
}

/* STS's error codes in dmbyok's taxonomy. Refused role assumption is a credential problem. */
static int sts_error_to_errno(const char *code, long status)
{
	static const char *const expired[] = { "ExpiredToken", "ExpiredTokenException",
		                               "IDPRejectedClaim" };
	static const char *const rejected[] = {
		"AccessDenied",
		"InvalidClientTokenId",
		"SignatureDoesNotMatch",
		"InvalidIdentityToken",
		"IncompleteSignature",
		"MissingAuthenticationToken",
		"RegionDisabledException",
	};

	if (code) {
		for (size_t i = 0; i < ELEMENTSOF(expired); i++)
			if (!strcmp(code, expired[i]))
				return -EKEYEXPIRED;
		for (size_t i = 0; i < ELEMENTSOF(rejected); i++)
			if (!strcmp(code, rejected[i]))
				return -EKEYREJECTED;
		if (!strcmp(code, "IDPCommunicationError"))
			return -EREMOTEIO;
	}
	return dmbyok_aws_error_to_errno(code, status);
}

/*
 * One STS action with the standard retry policy. `signer` NULL: unsigned. The response
 * (which may carry credentials) is returned in locked memory.
 */
static int sts_call(struct kms_http *h, const char *region, const char *action,
                    const struct secret *form, const struct aws_credentials *signer,
                    struct secret **ret_body, char *why, size_t why_size)
{
	_cleanup_free_ char *url = NULL, *signing_region = NULL, *sigv4 = NULL;
	const char *headers[] = { STS_CONTENT_TYPE, NULL };
	struct kms_retry retry;
	int r = -EIO;

	GUARD(dmbyok_aws_sts_endpoint(region, &url, &signing_region));
	if (asprintf(&sigv4, "aws:amz:%s:sts", signing_region) < 0)
		return log_oom();
	dmbyok_kms_retry_init(&retry, STS_ATTEMPTS);

	for (unsigned attempt = 1;; attempt++) {
		_cleanup_free_ char *code = NULL, *message = NULL;
		struct kms_http_response resp = {};
		const char *detail = NULL;
		bool retryable;

		r = dmbyok_kms_http_perform(
		    h,
		    &(struct kms_http_request){
		        .method = "POST",
		        .url = url,
		        .headers = headers,
		        .body = (const char *)form->data,
		        .body_len = form->size,
		        .sigv4 = signer ? sigv4 : NULL,
		        .access_key_id = signer ? signer->access_key_id : NULL,
		        .secret_access_key =
		            signer ? (const char *)signer->secret_access_key->data : NULL,
		        .session_token = signer ? signer->session_token : NULL,
		    },
		    &resp, &detail);
		if (r < 0) {
			snprintf(why, why_size, "STS %s: cannot reach %s: %s", action, url,
			         detail ? detail : dmbyok_strerror(r));
			retryable = dmbyok_kms_errno_is_retryable(r);
		} else if (resp.status == 200) {
			*ret_body = TAKE_PTR(resp.body);
			return 0;
		} else {
			(void)dmbyok_aws_xml_text((const char *)resp.body->data, "Code", &code);
			(void)dmbyok_aws_xml_text((const char *)resp.body->data, "Message",
			                          &message);
			dmbyok_kms_http_response_done(&resp);
			r = sts_error_to_errno(code, resp.status);
			snprintf(why, why_size, "STS %s at %s: %s: %s", action, url,
			         code ? code : "HTTP error", message ? message : "");
			retryable = dmbyok_aws_error_is_retryable(code, resp.status);
		}
		log_debug("STS %s attempt %u/%u: %s", action, attempt, retry.max_attempts, why);
		if (!retryable || attempt >= retry.max_attempts ||
		    !dmbyok_kms_retry_acquire(&retry, r))
			return r;
		dmbyok_kms_sleep_ms(dmbyok_kms_retry_backoff_ms(attempt));
	}
}

static int credentials_from_xml(struct secret *body, const char *source,
                                struct aws_credentials **ret, char **ret_arn)
{
	_cleanup_secret_ struct secret *secret = NULL, *token = NULL;
	_cleanup_free_ char *akid = NULL, *exp = NULL, *arn = NULL;
	time_t expiration;

	if (xml_secret(body, "SecretAccessKey", &secret) < 0 ||
	    xml_secret(body, "SessionToken", &token) < 0 ||
	    dmbyok_aws_xml_text((const char *)body->data, "AccessKeyId", &akid) < 0 ||
	    dmbyok_aws_xml_text((const char *)body->data, "Expiration", &exp) < 0 ||
	    dmbyok_aws_parse_iso8601(exp, &expiration) < 0)
		return -EPROTO;
	(void)dmbyok_aws_xml_text((const char *)body->data, "Arn", &arn);
	GUARD(dmbyok_aws_credentials_new(akid, TAKE_PTR(secret), TAKE_PTR(token), expiration,
	                                 source, ret));
	log_debug("STS: %s as %s until %s.", source, arn ? arn : "?", exp);
	if (ret_arn)
		*ret_arn = TAKE_PTR(arn);
	return 0;
}

static int assume_form(const char *action, const struct aws_assume_role *p,
                       const struct secret *token, struct secret **ret)
{
	_cleanup_secret_ struct secret *form = NULL;
	char duration[16];
	size_t n =
	    256 + 3 * (strlen(p->role_arn) + strlen(p->session_name) +
	               (p->external_id ? strlen(p->external_id) : 0) + (token ? token->size : 0));

	GUARD(dmbyok_secret_new(n, &form));
	form->size = 0;
	GUARD(form_add(form, "Action", action));
	GUARD(form_add(form, "Version", STS_VERSION));
	GUARD(form_add(form, "RoleArn", p->role_arn));
	GUARD(form_add(form, "RoleSessionName", p->session_name));
	if (p->duration_s) {
		snprintf(duration, sizeof(duration), "%u", p->duration_s);
		GUARD(form_add(form, "DurationSeconds", duration));
	}
	if (p->external_id)
		GUARD(form_add(form, "ExternalId", p->external_id));
	if (token)
		GUARD(form_add(form, "WebIdentityToken", (const char *)token->data));
	*ret = TAKE_PTR(form);
	return 0;
}

static int assume(struct kms_http *h, const char *region, const char *action,
                  const struct aws_credentials *signer, const struct secret *token,
                  const struct aws_assume_role *p, const char *source, struct aws_credentials **ret,
                  char *why, size_t why_size)
{
	_cleanup_secret_ struct secret *form = NULL, *body = NULL;
	int r;

	GUARD(assume_form(action, p, token, &form));
	GUARD(sts_call(h, region, action, form, signer, &body, why, why_size));
	r = credentials_from_xml(body, source, ret, NULL);
	if (r < 0)
		snprintf(why, why_size, "STS %s: malformed answer for role %s.", action,
		         p->role_arn);
	return r;
}

int dmbyok_aws_sts_assume_role(struct kms_http *h, const char *region,
                               const struct aws_credentials *source,
                               const struct aws_assume_role *p, struct aws_credentials **ret,
                               char *why, size_t why_size)
{
	return assume(h, region, "AssumeRole", source, NULL, p, "assume-role", ret, why, why_size);
}

int dmbyok_aws_sts_assume_role_with_web_identity(struct kms_http *h, const char *region,
                                                 const struct secret *token,
                                                 const struct aws_assume_role *p,
                                                 struct aws_credentials **ret, char *why,
                                                 size_t why_size)
{
	return assume(h, region, "AssumeRoleWithWebIdentity", NULL, token, p, "web-identity", ret,
	              why, why_size);
}

int dmbyok_aws_sts_get_caller_identity(struct kms_http *h, const char *region,
                                       const struct aws_credentials *cr, char **ret_arn,
                                       char **ret_account, char *why, size_t why_size)
{
	_cleanup_secret_ struct secret *form = NULL, *body = NULL;
	_cleanup_free_ char *arn = NULL, *account = NULL;

	GUARD(dmbyok_secret_new(128, &form));
	form->size = 0;
	GUARD(form_add(form, "Action", "GetCallerIdentity"));
	GUARD(form_add(form, "Version", STS_VERSION));
	GUARD(sts_call(h, region, "GetCallerIdentity", form, cr, &body, why, why_size));
	if (dmbyok_aws_xml_text((const char *)body->data, "Arn", &arn) < 0) {
		snprintf(why, why_size, "STS GetCallerIdentity: no Arn in the answer.");
		return -EPROTO;
	}
	(void)dmbyok_aws_xml_text((const char *)body->data, "Account", &account);
	*ret_arn = TAKE_PTR(arn);
	if (ret_account)
		*ret_account = TAKE_PTR(account);
	return 0;
}

/* The characters of an IAM role or session name, which never hold '/' or ':'. */
static bool iam_name_valid(const char *s, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-",
		            s[i]))
			return false;
	return true;
}

int dmbyok_aws_grantee_from_caller_arn(const char *arn, char **ret)
{
	const char *partition, *service, *region, *account, *resource, *role, *session;
	size_t n_partition, n_role;
	char *s;

	/* arn:PARTITION:SERVICE::ACCOUNT:RESOURCE (principals are global: no region) */
	ENSURE(arn && ret, EINVAL);
	if (strncmp(arn, "arn:", 4) != 0)
		return -EINVAL;
	partition = arn + 4;
	n_partition = strspn(partition, "abcdefghijklmnopqrstuvwxyz0123456789-");
	if (n_partition == 0 || partition[n_partition] != ':')
		return -EINVAL;
	service = partition + n_partition + 1;
	if (strncmp(service, "iam:", 4) != 0 && strncmp(service, "sts:", 4) != 0)
		return -EINVAL;
	region = service + 4;
	if (*region != ':')
		return -EINVAL;
	account = region + 1;
	if (strspn(account, "0123456789") != 12 || account[12] != ':')
		return -EINVAL;
	resource = account + 13;
	if (!*resource)
		return -EINVAL;

	if (strncmp(service, "sts:", 4) != 0 ||
	    strncmp(resource, "assumed-role/", strlen("assumed-role/")) != 0) {
		s = strdup(arn);
		ENSURE_ALLOC(s);
		*ret = s;
		return 0;
	}

	/*
	 * A session is arn:P:sts::ACCOUNT:assumed-role/ROLE/SESSION; a grant names its role,
	 * arn:P:iam::ACCOUNT:role/ROLE, so that it outlives the session. A role's path
	 * (role/PATH/ROLE) is not in the session's ARN: for such a role the caller names the
	 * grantee itself (dmbyok's --grantee).
	 */
	role = resource + strlen("assumed-role/");
	n_role = strcspn(role, "/");
	if (role[n_role] != '/' || !iam_name_valid(role, n_role))
		return -EINVAL;
	session = role + n_role + 1;
	if (!iam_name_valid(session, strlen(session)))
		return -EINVAL;
	if (asprintf(&s, "arn:%.*s:iam::%.12s:role/%.*s", (int)n_partition, partition, account,
	             (int)n_role, role) < 0)
		return -ENOMEM;
	*ret = s;
	return 0;
}
