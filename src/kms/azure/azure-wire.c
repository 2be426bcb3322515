/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the Azure Key Vault provider's modules share: key identifiers, the 401 challenge,
 * Key Vault's error shape and its errno, base64url in locked memory, form encoding.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "azure.h"
#include "../kms-util.h"
#include "dmbyok/encoding.h"
#include "dmbyok/log.h"

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
#define HOST_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:"

void dmbyok_azure_key_id_done(struct azure_key_id *k)
{
	if (!k)
		return;
	free(k->vault);
	free(k->host);
	free(k->name);
	free(k->version);
	*k = (struct azure_key_id){};
}

static bool version_valid(const char *v, size_t n)
{
	if (n != 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)v[i]))
			return false;
	return true;
}

int dmbyok_azure_parse_key_id(const char *id, struct azure_key_id *ret)
{
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id k = {};
	const char *host, *p, *name, *version = NULL;
	size_t n_host, n_name, n_version = 0;

	ENSURE(id && ret, EINVAL);
	if (strncasecmp(id, "https://", 8) != 0)
		return -EINVAL;
	host = id + 8;
	n_host = strspn(host, HOST_CHARS);
	/* A host, an optional port; no userinfo, no empty labels at the ends. */
	if (n_host == 0 || n_host > 253 || host[0] == '.' || host[0] == ':' ||
	    host[n_host - 1] == '.' || host[n_host - 1] == ':' ||
	    strncmp(host + n_host, "/keys/", 6) != 0)
		return -EINVAL;
	p = memchr(host, ':', n_host);
	if (p && (strspn(p + 1, "0123456789") != (size_t)(host + n_host - p - 1) ||
	          host + n_host - p - 1 > 5))
		return -EINVAL;
	name = host + n_host + 6;
	n_name = strspn(name, NAME_CHARS);
	if (n_name == 0 || n_name > 127)
		return -EINVAL;
	p = name + n_name;
	if (*p == '/') {
		version = p + 1;
		n_version = strlen(version);
		/* A trailing slash names the key, as Azure's SDKs read it. */
		if (n_version == 0)
			version = NULL;
		else if (!version_valid(version, n_version))
			return -EINVAL;
	} else if (*p) {
		return -EINVAL;
	}

	k.host = strndup(host, n_host);
	k.name = strndup(name, n_name);
	ENSURE(k.host && k.name, ENOMEM);
	for (char *c = k.host; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	if (asprintf(&k.vault, "https://%s", k.host) < 0)
		return -ENOMEM;
	if (version) {
		k.version = strndup(version, n_version);
		ENSURE_ALLOC(k.version);
		for (char *c = k.version; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	}
	*ret = k;
	k = (struct azure_key_id){};
	return 0;
}

bool dmbyok_azure_is_key_id(const char *id)
{
	struct azure_key_id k = {};
	bool ok = dmbyok_azure_parse_key_id(id, &k) == 0;

	dmbyok_azure_key_id_done(&k);
	return ok;
}

int dmbyok_azure_key_vault_host(const char *id, char **ret)
{
	struct azure_key_id k = {};

	GUARD(dmbyok_azure_parse_key_id(id, &k));
	*ret = TAKE_PTR(k.host);
	dmbyok_azure_key_id_done(&k);
	return 0;
}

static const struct {
	const char *suffix;
	const char *resource;
} clouds[] = {
	{ ".vault.azure.net", AZURE_VAULT_RESOURCE },
	{ ".managedhsm.azure.net", AZURE_HSM_RESOURCE },
	{ ".vault.azure.cn", "https://vault.azure.cn" },
	{ ".managedhsm.azure.cn", "https://managedhsm.azure.cn" },
	{ ".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net" },
	{ ".managedhsm.usgovcloudapi.net", "https://managedhsm.usgovcloudapi.net" },
	{ ".vault.microsoftazure.de", "https://vault.microsoftazure.de" },
};

/* The host without a port, compared with a suffix. */
static bool host_ends_with(const char *host, const char *suffix)
{
	size_t n = strcspn(host, ":"), m = strlen(suffix);

	return n > m && !strncasecmp(host + n - m, suffix, m);
}

bool dmbyok_azure_host_is_hsm(const char *host)
{
	for (size_t i = 0; i < ELEMENTSOF(clouds); i++)
		if (host_ends_with(host, clouds[i].suffix))
			return strstr(clouds[i].suffix, "managedhsm") != NULL;
	return false;
}

const char *dmbyok_azure_resource_for_host(const char *host)
{
	for (size_t i = 0; host && i < ELEMENTSOF(clouds); i++)
		if (host_ends_with(host, clouds[i].suffix))
			return clouds[i].resource;
	return NULL;
}

void dmbyok_azure_challenge_done(struct azure_challenge *c)
{
	if (!c)
		return;
	free(c->authority);
	free(c->tenant);
	free(c->resource);
	*c = (struct azure_challenge){};
}

/* One auth-param (name=value or name="value") at *p; advances past it and a comma. */
static int next_param(const char **p, char **ret_name, char **ret_value)
{
	const char *s = *p, *name;
	size_t n;
	char *v;

	s += strspn(s, " \t,");
	if (!*s)
		return 0;
	name = s;
	n = strcspn(s, "= \t,");
	if (n == 0 || name[n] != '=')
		return -EINVAL;
	s += n + 1;
	if (*s == '"') {
		const char *end = strchr(s + 1, '"');

		if (!end)
			return -EINVAL;
		v = strndup(s + 1, (size_t)(end - s - 1));
		s = end + 1;
	} else {
		size_t m = strcspn(s, " \t,");

		v = strndup(s, m);
		s += m;
	}
	ENSURE_ALLOC(v);
	*ret_name = strndup(name, n);
	if (!*ret_name) {
		free(v);
		return -ENOMEM;
	}
	*ret_value = v;
	*p = s;
	return 1;
}

int dmbyok_azure_parse_challenge(const char *header, struct azure_challenge *ret)
{
	_cleanup_(dmbyok_azure_challenge_done) struct azure_challenge c = {};
	_cleanup_free_ char *scope = NULL;
	const char *p = header, *t;
	int r;

	ENSURE(header && ret, EINVAL);
	p += strspn(p, " \t");
	if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
		return -EINVAL;
	p += 6;
	for (;;) {
		_cleanup_free_ char *name = NULL, *value = NULL;

		r = next_param(&p, &name, &value);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		if (!strcasecmp(name, "authorization") || !strcasecmp(name, "authorization_uri")) {
			free(c.authority);
			c.authority = TAKE_PTR(value);
		} else if (!strcasecmp(name, "resource")) {
			free(c.resource);
			c.resource = TAKE_PTR(value);
		} else if (!strcasecmp(name, "scope")) {
			free(scope);
			scope = TAKE_PTR(value);
		}
	}
	if (!c.authority || !dmbyok_kms_url_acceptable(c.authority))
		return -EINVAL;
	/* https://login.microsoftonline.com/TENANT[/...]: the first path segment. */
	t = strchr(c.authority + strlen("https://") - (c.authority[4] == ':' ? 1 : 0), '/');
	if (!t || !t[1])
		return -EINVAL;
	c.tenant = strndup(t + 1, strcspn(t + 1, "/?#"));
	ENSURE_ALLOC(c.tenant);
	if (!c.resource && scope) {
		size_t n = strlen(scope);

		if (n > 9 && !strcmp(scope + n - 9, "/.default"))
			scope[n - 9] = '\0';
		c.resource = TAKE_PTR(scope);
	}
	*ret = c;
	c = (struct azure_challenge){};
	return 0;
}

/* Text that quotes the network made printable in place. */
static void make_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

int dmbyok_azure_challenge_verify(const struct azure_challenge *c, const char *vault_host,
                                  const char *tenant, char **ret_resource, char *why,
                                  size_t why_size)
{
	_cleanup_free_ char *resource = NULL;
	const char *domain;
	size_t n_domain, n_host = strcspn(vault_host, ":");

	*ret_resource = NULL;
	if (tenant && c->tenant && strcasecmp(tenant, c->tenant) != 0) {
		snprintf(why, why_size,
		         "the vault %.*s belongs to tenant %.100s, AZURE_TENANT_ID says %.100s: "
		         "dmbyok does not switch tenants (use credentials of the vault's tenant)",
		         (int)n_host, vault_host, c->tenant, tenant);
		make_printable(why);
		return -EKEYREJECTED;
	}
	if (!c->resource)
		return 0;
	/* https://DOMAIN, a trailing slash allowed; no port, path, query or credentials. */
	if (strncasecmp(c->resource, "https://", 8) == 0) {
		domain = c->resource + 8;
		n_domain = strspn(domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                          "0123456789-.");
		if (n_domain > 0 && n_domain <= 253 && domain[0] != '.' &&
		    (!domain[n_domain] || !strcmp(domain + n_domain, "/")) &&
		    n_host > n_domain + 1 && vault_host[n_host - n_domain - 1] == '.' &&
		    !strncasecmp(vault_host + n_host - n_domain, domain, n_domain)) {
			if (asprintf(&resource, "https://%.*s", (int)n_domain, domain) < 0)
				return -ENOMEM;
			for (char *p = resource; *p; p++)
				*p = (char)tolower((unsigned char)*p);
			*ret_resource = TAKE_PTR(resource);
			return 0;
		}
	}
	snprintf(why, why_size,
	         "the vault %.*s asks for tokens for \"%.200s\", which is not its domain: "
	         "refused (a token for another service must not be sent to it)",
	         (int)n_host, vault_host, c->resource);
	make_printable(why);
	return -EKEYREJECTED;
}

/* A copy made printable (the text came from the network), bounded. */
static char *printable_dup(const char *s)
{
	size_t n = strnlen(s, 400);
	char *d = strndup(s, n);

	for (size_t i = 0; d && i < n; i++)
		if ((unsigned char)d[i] < 0x20 || (unsigned char)d[i] >= 0x7f)
			d[i] = d[i] == '\r' || d[i] == '\n' ? ' ' : '?';
	return d;
}

static int member_dup(json_object *o, const char *field, char **ret)
{
	json_object *v;

	*ret = NULL;
	if (!o || !json_object_object_get_ex(o, field, &v) ||
	    !json_object_is_type(v, json_type_string) || !*json_object_get_string(v))
		return 0;
	*ret = printable_dup(json_object_get_string(v));
	return *ret ? 0 : -ENOMEM;
}

int dmbyok_azure_parse_error(const struct secret *body, char **ret_code, char **ret_inner,
                             char **ret_message)
{
	json_object *j = NULL, *e = NULL, *inner = NULL;
	char *code = NULL, *in = NULL, *msg = NULL;
	int r = 0;

	j = body && body->data ? json_tokener_parse((const char *)body->data) : NULL;
	if (j && json_object_object_get_ex(j, "error", &e) &&
	    json_object_is_type(e, json_type_object)) {
		/* "innererror" on the wire; some front ends spell it "innerError". */
		if ((!json_object_object_get_ex(e, "innererror", &inner) &&
		     !json_object_object_get_ex(e, "innerError", &inner)) ||
		    !json_object_is_type(inner, json_type_object))
			inner = NULL;
		if (member_dup(e, "code", &code) < 0 || member_dup(inner, "code", &in) < 0 ||
		    member_dup(e, "message", &msg) < 0)
			r = -ENOMEM;
	}
	json_object_put(j);
	if (r < 0) {
		free(code);
		free(in);
		free(msg);
		return r;
	}
	*ret_code = code;
	*ret_inner = in;
	*ret_message = msg;
	return 0;
}

int dmbyok_azure_error_to_errno(const char *operation, long http_status, const char *code,
                                const char *inner)
{
	static const struct {
		long status;
		int r;
	} by_status[] = {
		{ 401, -EKEYEXPIRED },
		/* Disabled, expired or not yet valid key, access policy, RBAC, Azure Policy. */
		{ 403, -EKEYREVOKED },
		/* KeyNotFound: deleted (soft-deleted or purged), or never existed. */
		{ 404, -EKEYREVOKED },
		{ 408, -ETIMEDOUT },
		/* Conflict: a key being deleted or recovered at this moment. */
		{ 409, -EAGAIN },
		{ 429, -EAGAIN },
		{ 504, -ETIMEDOUT },
	};

	(void)inner; /* the status says the class; innererror only refines the words */
	/* Key Vault's answer to a blob its key cannot unwrap. */
	if (http_status == 400 && code && !strcmp(code, "BadParameter") && operation &&
	    (!strcmp(operation, "Decrypt") || !strcmp(operation, "ReEncrypt")))
		return -EBADMSG;
	for (size_t i = 0; i < ELEMENTSOF(by_status); i++)
		if (by_status[i].status == http_status)
			return by_status[i].r;
	return http_status >= 500 ? -EREMOTEIO : http_status >= 400 ? -EINVAL : -EPROTO;
}

int dmbyok_azure_base64url_secret(const void *data, size_t n, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;

	GUARD(dmbyok_kms_base64_secret(data, n, &s));
	while (s->size > 0 && s->data[s->size - 1] == '=')
		s->data[--s->size] = '\0';
	for (size_t i = 0; i < s->size; i++)
		if (s->data[i] == '+')
			s->data[i] = '-';
		else if (s->data[i] == '/')
			s->data[i] = '_';
	*ret = TAKE_PTR(s);
	return 0;
}

int dmbyok_azure_base64url_decode(const char *s, size_t n, struct secret **ret)
{
	_cleanup_secret_ struct secret *std = NULL, *out = NULL;
	int len;

	while (n > 0 && s[n - 1] == '=')
		n--;
	if (n == 0 || n % 4 == 1 || n > (1U << 20))
		return -EINVAL;
	/* To the standard alphabet, padded, in locked memory: the value may be a key. */
	GUARD(dmbyok_secret_new(n + 4, &std));
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (c == '+' || c == '/')
			return -EINVAL;
		std->data[i] = (uint8_t)c;
	}
	std->size = n;
	while (std->size % 4)
		std->data[std->size++] = '=';
	GUARD(dmbyok_secret_new(std->size / 4 * 3, &out));
	len = dmbyok_base64_decode((const char *)std->data, std->size, out->data, out->capacity);
	if (len <= 0)
		return -EINVAL;
	out->size = (size_t)len;
	*ret = TAKE_PTR(out);
	return 0;
}

int dmbyok_azure_form_append(struct secret *form, const char *name, const void *value, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	const uint8_t *v = value;
	uint8_t esc[3] = { '%', 0, 0 };

	if (form->size > 0)
		GUARD(dmbyok_secret_append(form, "&", 1));
	GUARD(dmbyok_secret_append(form, name, strlen(name)));
	GUARD(dmbyok_secret_append(form, "=", 1));
	for (size_t i = 0; i < n; i++) {
		if (isalnum(v[i]) || (v[i] && strchr("-._~", v[i]))) {
			GUARD(dmbyok_secret_append(form, &v[i], 1));
			continue;
		}
		esc[1] = (uint8_t)hex[v[i] >> 4];
		esc[2] = (uint8_t)hex[v[i] & 15];
		GUARD(dmbyok_secret_append(form, esc, 3));
	}
	return 0;
}
