/* SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/core_names.h>

#include "dmbyok/encoding.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/token.h"

#define KCV_PREFIX     "hmac-sha256-128:"
#define KCV_BYTES      16
#define BINDING_PREFIX "sha256:"

void dmbyok_token_free(struct dmbyok_token *t)
{
	if (!t)
		return;
	free(t->kms);
	free(t->key_id);
	free(t->key_arn);
	free(t->region);
	free(t->ciphertext);
	json_object_put(t->context);
	free(t->key_check);
	free(t->binding);
	free(t->created);
	free(t->rewrapped);
	free(t->grant_id);
	free(t);
}

/* Copy a required (or optional) string member; -EUCLEAN when required and absent. */
static int get_string(json_object *o, const char *name, int required, char **ret)
{
	json_object *v;

	if (!json_object_object_get_ex(o, name, &v) || json_object_is_type(v, json_type_null)) {
		*ret = NULL;
		if (required)
			return log_error_errno(EUCLEAN, "dmbyok token lacks \"%s\".", name);
		return 0;
	}
	/* An embedded NUL ("\u0000") would be cut off by every C string use: refuse it. */
	if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
		return log_error_errno(EUCLEAN, "dmbyok token member \"%s\" is not a string.",
		                       name);
	*ret = strdup(json_object_get_string(v));
	ENSURE_ALLOC(*ret);
	return 0;
}

int dmbyok_token_from_json(const char *json, struct dmbyok_token **ret)
{
	_cleanup_token_ struct dmbyok_token *t = NULL;
	json_object *o = NULL, *v, *slot;
	_cleanup_free_ char *type = NULL;
	char *end = NULL;
	int r;

	o = json_tokener_parse(json);
	if (!o || !json_object_is_type(o, json_type_object)) {
		r = log_error_errno(EUCLEAN, "dmbyok token is not a JSON object.");
		goto out;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		r = -ENOMEM;
		goto out;
	}

	r = get_string(o, "type", 1, &type);
	if (r < 0)
		goto out;
	if (strcmp(type, DMBYOK_TOKEN_TYPE) != 0) {
		r = log_error_errno(EUCLEAN, "Token type is \"%s\", not \"%s\".", type,
		                    DMBYOK_TOKEN_TYPE);
		goto out;
	}

	if (!json_object_object_get_ex(o, "version", &v) ||
	    !json_object_is_type(v, json_type_int)) {
		r = log_error_errno(EUCLEAN, "dmbyok token lacks an integer \"version\".");
		goto out;
	}
	t->version = json_object_get_int(v);
	if (t->version < DMBYOK_TOKEN_VERSION_MIN || t->version > DMBYOK_TOKEN_VERSION) {
		r = log_error_errno(EUCLEAN,
		                    "dmbyok token version %d is not supported (this build reads "
		                    "%d to %d).",
		                    t->version, DMBYOK_TOKEN_VERSION_MIN, DMBYOK_TOKEN_VERSION);
		goto out;
	}

	if (!json_object_object_get_ex(o, "keyslots", &v) ||
	    !json_object_is_type(v, json_type_array) || json_object_array_length(v) != 1 ||
	    !json_object_is_type(slot = json_object_array_get_idx(v, 0), json_type_string)) {
		r = log_error_errno(EUCLEAN,
		                    "dmbyok token must be assigned to exactly one keyslot.");
		goto out;
	}
	errno = 0;
	t->keyslot = (int)strtol(json_object_get_string(slot), &end, 10);
	if (errno || !end || *end || end == json_object_get_string(slot) || t->keyslot < 0 ||
	    t->keyslot >= 32) {
		r = log_error_errno(EUCLEAN, "dmbyok token names an invalid keyslot.");
		goto out;
	}

	if ((r = get_string(o, "kms", 1, &t->kms)) < 0 ||
	    (r = get_string(o, "key_id", 1, &t->key_id)) < 0 ||
	    (r = get_string(o, "key_arn", 1, &t->key_arn)) < 0 ||
	    (r = get_string(o, "region", 0, &t->region)) < 0 ||
	    (r = get_string(o, "ciphertext", 1, &t->ciphertext)) < 0 ||
	    (r = get_string(o, "key_check", 1, &t->key_check)) < 0 ||
	    (r = get_string(o, "binding", t->version >= 2, &t->binding)) < 0 ||
	    (r = get_string(o, "created", 0, &t->created)) < 0 ||
	    (r = get_string(o, "rewrapped", 0, &t->rewrapped)) < 0 ||
	    (r = get_string(o, "grant_id", 0, &t->grant_id)) < 0)
		goto out;
	if (t->grant_id && !dmbyok_kms_grant_id_valid(t->grant_id)) {
		r = log_error_errno(EUCLEAN, "dmbyok token's \"grant_id\" is not a KMS grant id.");
		goto out;
	}

	if (!dmbyok_kms_provider_known(t->kms)) {
		r = log_error_errno(
		    EUCLEAN, "dmbyok token names KMS \"%s\", which this build lacks.", t->kms);
		goto out;
	}

	if (!json_object_object_get_ex(o, "context", &v) ||
	    !json_object_is_type(v, json_type_object)) {
		r = log_error_errno(EUCLEAN,
		                    "dmbyok token lacks its encryption \"context\" object.");
		goto out;
	}
	json_object_object_foreach (v, key, val) {
		(void)key;
		if (!json_object_is_type(val, json_type_string)) {
			r = log_error_errno(EUCLEAN, "Encryption context values must be strings.");
			goto out;
		}
	}
	t->context = json_object_get(v);

	*ret = TAKE_PTR(t);
	r = 0;
out:
	json_object_put(o);
	return r;
}

int dmbyok_token_to_json(const struct dmbyok_token *t, char **ret)
{
	json_object *o, *slots;
	char slot[16];
	int r = -ENOMEM;

	o = json_object_new_object();
	ENSURE_ALLOC(o);
	slots = json_object_new_array();
	if (!slots)
		goto out;
	snprintf(slot, sizeof(slot), "%d", t->keyslot);
	json_object_array_add(slots, json_object_new_string(slot));

	json_object_object_add(o, "type", json_object_new_string(DMBYOK_TOKEN_TYPE));
	json_object_object_add(o, "keyslots", slots);
	json_object_object_add(o, "version", json_object_new_int(t->version));
	json_object_object_add(o, "kms", json_object_new_string(t->kms));
	json_object_object_add(o, "key_id", json_object_new_string(t->key_id));
	json_object_object_add(o, "key_arn", json_object_new_string(t->key_arn));
	if (t->region)
		json_object_object_add(o, "region", json_object_new_string(t->region));
	json_object_object_add(o, "ciphertext", json_object_new_string(t->ciphertext));
	json_object_object_add(o, "context", json_object_get(t->context));
	json_object_object_add(o, "key_check", json_object_new_string(t->key_check));
	if (t->binding)
		json_object_object_add(o, "binding", json_object_new_string(t->binding));
	if (t->created)
		json_object_object_add(o, "created", json_object_new_string(t->created));
	if (t->rewrapped)
		json_object_object_add(o, "rewrapped", json_object_new_string(t->rewrapped));
	if (t->grant_id)
		json_object_object_add(o, "grant_id", json_object_new_string(t->grant_id));

	*ret = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	r = *ret ? 0 : -ENOMEM;
out:
	json_object_put(o);
	return r;
}

int dmbyok_context_new(const char *volume_uuid, char *const *pairs, size_t n_pairs,
                       json_object **ret)
{
	json_object *o = json_object_new_object();

	ENSURE_ALLOC(o);
	json_object_object_add(o, DMBYOK_CONTEXT_VOLUME, json_object_new_string(volume_uuid));

	for (size_t i = 0; i < n_pairs; i++) {
		const char *eq = strchr(pairs[i], '=');
		_cleanup_free_ char *key = NULL;

		if (!eq || eq == pairs[i]) {
			json_object_put(o);
			return log_error_errno(
			    EINVAL, "Context \"%s\" is not of the form key=value.", pairs[i]);
		}
		key = strndup(pairs[i], (size_t)(eq - pairs[i]));
		if (!key) {
			json_object_put(o);
			return -ENOMEM;
		}
		if (!strncmp(key, DMBYOK_CONTEXT_RESERVED_PREFIX,
		             strlen(DMBYOK_CONTEXT_RESERVED_PREFIX)) ||
		    json_object_object_get_ex(o, key, NULL)) {
			json_object_put(o);
			return log_error_errno(EINVAL,
			                       "Context key \"%s\" is reserved or repeated.", key);
		}
		json_object_object_add(o, key, json_object_new_string(eq + 1));
	}
	/* The token must fit the LUKS2 JSON area (12 KiB by default) with room to spare. */
	if (strlen(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) >
	    DMBYOK_CONTEXT_MAX_BYTES) {
		json_object_put(o);
		return log_error_errno(E2BIG, "The encryption context is larger than %d bytes.",
		                       DMBYOK_CONTEXT_MAX_BYTES);
	}
	*ret = o;
	return 0;
}

int dmbyok_token_check_volume(const struct dmbyok_token *t, const char *volume_uuid)
{
	json_object *v;

	if (!json_object_object_get_ex(t->context, DMBYOK_CONTEXT_VOLUME, &v) ||
	    strcmp(json_object_get_string(v), volume_uuid) != 0)
		return log_error_errno(
		    EBADMSG,
		    "The dmbyok token names volume %s, but this header is %s: the "
		    "token was copied from another volume. Restore this volume's "
		    "own header backup.",
		    v ? json_object_get_string(v) : "(none)", volume_uuid);
	return 0;
}

/* Hex of a digest or MAC, prefixed ("sha256:", "hmac-sha256-128:"). */
static int prefixed_hex(const char *prefix, const uint8_t *data, size_t n, char **ret)
{
	_cleanup_free_ char *hex = NULL;

	GUARD(dmbyok_hex_encode(data, n, &hex));
	if (asprintf(ret, "%s%s", prefix, hex) < 0)
		return -ENOMEM;
	return 0;
}

int dmbyok_binding_fingerprint(const char *binding, char **ret)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	if (!EVP_Digest(binding, strlen(binding), md, &n, EVP_sha256(), NULL))
		return -EIO;
	return prefixed_hex(BINDING_PREFIX, md, n, ret);
}

int dmbyok_key_check_value(const struct secret *dek, const char *volume_uuid, const char *binding,
                           char **ret)
{
	static const char label_v1[] = "dmbyok-kcv-v1", label_v2[] = "dmbyok-kcv-v2";
	static const uint8_t sep = 0;
	uint8_t mac[EVP_MAX_MD_SIZE];
	EVP_MAC *alg = NULL;
	EVP_MAC_CTX *ctx = NULL;
	size_t out_len = 0;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	bool ok;
	int r = -EIO;

	alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
	ctx = alg ? EVP_MAC_CTX_new(alg) : NULL;
	if (!ctx || !EVP_MAC_init(ctx, dek->data, dek->size, params))
		goto out;
	if (binding)
		/* v2: the header's digest and segment are in the message (docs/format.md). */
		ok = EVP_MAC_update(ctx, (const uint8_t *)label_v2, sizeof(label_v2) - 1) &&
		     EVP_MAC_update(ctx, &sep, 1) &&
		     EVP_MAC_update(ctx, (const uint8_t *)volume_uuid, strlen(volume_uuid)) &&
		     EVP_MAC_update(ctx, &sep, 1) &&
		     EVP_MAC_update(ctx, (const uint8_t *)binding, strlen(binding));
	else
		ok = EVP_MAC_update(ctx, (const uint8_t *)label_v1, sizeof(label_v1) - 1) &&
		     EVP_MAC_update(ctx, (const uint8_t *)volume_uuid, strlen(volume_uuid));
	if (!ok || !EVP_MAC_final(ctx, mac, &out_len, sizeof(mac)))
		goto out;
	r = prefixed_hex(KCV_PREFIX, mac, KCV_BYTES, ret);
out:
	dmbyok_secure_wipe(mac, sizeof(mac));
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(alg);
	return r;
}

int dmbyok_token_verify_dek(const struct dmbyok_token *t, const struct secret *dek,
                            const char *volume_uuid, const char *binding)
{
	_cleanup_free_ char *kcv = NULL;

	ENSURE(dek->size == DMBYOK_DEK_BYTES, EBADMSG);
	ENSURE(t->version < 2 || binding, EINVAL);
	GUARD(dmbyok_key_check_value(dek, volume_uuid, t->version >= 2 ? binding : NULL, &kcv));
	if (strlen(kcv) != strlen(t->key_check) ||
	    !dmbyok_secret_equal(kcv, t->key_check, strlen(kcv)))
		return log_error_errno(EBADMSG,
		                       "The unwrapped data key does not match the token's "
		                       "key check value: the token or header was altered.");
	return 0;
}

int dmbyok_timestamp_now(char **ret)
{
	char buf[32];
	struct tm tm;
	time_t now = time(NULL);

	if (!gmtime_r(&now, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return -EIO;
	*ret = strdup(buf);
	ENSURE_ALLOC(*ret);
	return 0;
}
