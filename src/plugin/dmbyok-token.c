/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcryptsetup-token-dmbyok.so: the LUKS2 external token handler for type "dmbyok", so
 * that stock `cryptsetup open` and systemd-cryptsetup (crypttab) open dmbyok volumes. The
 * token's wrapped DEK is unwrapped by KMS Decrypt under its encryption context, checked
 * against the token's key check value and this header's binding, and handed back as the
 * keyslot passphrase (the DEK keyslot's passphrase is the 64 raw DEK bytes, docs/format.md).
 *
 * This code runs inside other programs. It keeps no state between calls, leaves their
 * settings alone (no mlockall, mallopt or rlimits: those are the host's business), returns
 * the passphrase in locked memory that cryptsetup_token_buffer_free wipes, and bounds its
 * own network I/O, since nothing around a token's open does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libcryptsetup.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/token.h"
#include "dmbyok/volume.h"

#define _public_ __attribute__((visibility("default")))

/*
 * Bounds of one open: each KMS attempt (connect included) ends within the per-attempt
 * timeout, and there are at most this many, with the provider's full-jitter backoff
 * (< 0.4 s in all) between them. DMBYOK_TOKEN_TIMEOUT and DMBYOK_TOKEN_ATTEMPTS override.
 */
#define TOKEN_TIMEOUT_S_DEFAULT 5U
#define TOKEN_TIMEOUT_S_MAX     60U
#define TOKEN_ATTEMPTS_DEFAULT  3U
#define TOKEN_ATTEMPTS_MAX      10U

_public_ int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer,
                                   size_t *buffer_len, void *usrptr);
_public_ void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len);
_public_ int cryptsetup_token_validate(struct crypt_device *cd, const char *json);
_public_ void cryptsetup_token_dump(struct crypt_device *cd, const char *json);
_public_ const char *cryptsetup_token_version(void);

/* Each entry point: our messages say who speaks, at the level DMBYOK_LOG_LEVEL asks. */
static void log_setup(void)
{
	dmbyok_log_setup("dmbyok-token");
}

static unsigned env_uint(const char *name, unsigned def, unsigned max)
{
	const char *s = getenv(name);
	char *end = NULL;
	unsigned long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : 0;
	if (errno || !end || *end || v < 1 || v > max) {
		log_warning("%s=%s is not 1 to %u; using %u.", name, s, max, def);
		return def;
	}
	return (unsigned)v;
}

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) / page * page;
}

/*
 * The passphrase goes to libcryptsetup in a mapping of its own, locked and kept out of core
 * dumps and forks, as dmbyok's own secrets are; only cryptsetup_token_buffer_free (which
 * libcryptsetup calls for every buffer this handler returns) releases it.
 */
static int passphrase_new(const struct secret *dek, char **ret, size_t *ret_len)
{
	size_t len = page_round(dek->size);
	void *p;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return log_error_errno(errno, "Cannot map memory for the passphrase: %m");
	/* The raw system call, as secret.c explains: a sanitizer's mlock() is a no-op. */
	if (syscall(SYS_mlock, p, len) < 0) {
		int r = negative_errno();

		munmap(p, len);
		return log_error_errno(r, "Cannot lock memory for the passphrase: %s",
		                       strerror(-r));
	}
	(void)madvise(p, len, MADV_DONTDUMP);
	(void)madvise(p, len, MADV_WIPEONFORK);
	memcpy(p, dek->data, dek->size);
	*ret = p;
	*ret_len = dek->size;
	return 0;
}

_public_ void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len)
{
	size_t len;

	if (!buffer)
		return;
	len = page_round(buffer_len ? buffer_len : 1);
	dmbyok_secure_wipe(buffer, len);
	(void)syscall(SYS_munlock, buffer, len);
	munmap(buffer, len);
}

/* A KMS failure in the operator's terms, naming the volume and the key. */
static void log_kms_failure(struct kms_client *c, int r, const char *uuid,
                            const struct dmbyok_token *t, unsigned timeout_s, unsigned attempts)
{
	const char *said = c ? dmbyok_kms_last_error(c) : "";
	const char *why = *said ? said : dmbyok_strerror(r);

	switch (dmbyok_error_class(r)) {
	case DMBYOK_ERR_KEY_REVOKED:
		log_error("Cannot unlock volume %s: its customer key %s is revoked or unusable "
		          "(%s). The key owner must re-enable it or restore this host's access.",
		          uuid, t->key_arn, why);
		break;
	case DMBYOK_ERR_KMS_TRANSIENT:
		log_error("Cannot unlock volume %s: the KMS is unreachable or failing for key %s "
		          "(%s; up to %u attempt(s) of at most %u s each). Other tokens or a "
		          "passphrase may be tried; retry later.",
		          uuid, t->key_arn, why, attempts, timeout_s);
		break;
	case DMBYOK_ERR_CREDENTIALS:
		log_error("Cannot unlock volume %s: no usable KMS credentials for key %s (%s: %s). "
		          "At boot they come from /etc/dmbyok/cryptsetup.env or the instance "
		          "role (libcryptsetup-token-dmbyok(8)).",
		          uuid, t->key_arn, dmbyok_strerror(r), why);
		break;
	case DMBYOK_ERR_WRONG_TOKEN:
		log_error("Cannot unlock volume %s: the KMS refuses its wrapped key under key %s "
		          "and this volume's encryption context (%s): the token was altered or "
		          "copied from another volume.",
		          uuid, t->key_arn, why);
		break;
	default:
		log_error("Cannot unlock volume %s with key %s: %s", uuid, t->key_arn, why);
		break;
	}
}

/*
 * What libcryptsetup should do next. From an external token, -ENOENT, -EAGAIN (and -EPERM,
 * -EINVAL, which it turns into -ENOENT) let it try the other tokens and the caller ask for a
 * passphrase; any other errno ends the token loop and reaches the caller as it is.
 */
static int token_errno(int r)
{
	switch (dmbyok_error_class(r)) {
	case DMBYOK_ERR_KEY_REVOKED:
		return -EKEYREVOKED; /* a clear, final answer: the key owner said no */
	case DMBYOK_ERR_KMS_TRANSIENT:
	case DMBYOK_ERR_CREDENTIALS:
		return -EAGAIN; /* this token is not usable now; others may be */
	case DMBYOK_ERR_INTERNAL:
		return r == -ENOMEM ? r : -ENOENT;
	default:
		return -ENOENT; /* this token cannot open this header */
	}
}

static int unwrap(struct crypt_device *cd, int token, struct secret **ret_dek)
{
	_cleanup_token_ struct dmbyok_token *t = NULL;
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *binding = NULL;
	const char *json = NULL, *uuid, *device, *metadata;
	struct kms_options kms;
	struct volume v;
	unsigned timeout_s, attempts;
	int r;

	r = crypt_token_json_get(cd, token, &json);
	if (r < 0)
		return log_error_errno(r, "Cannot read LUKS2 token %d: %s", token,
		                       dmbyok_strerror(r));
	GUARD(dmbyok_token_from_json(json, &t));
	uuid = crypt_get_uuid(cd);
	if (!uuid)
		return log_error_errno(EUCLEAN, "The LUKS2 header has no UUID.");
	/* A token copied from another volume names that volume: refused before any KMS call. */
	GUARD(dmbyok_token_check_volume(t, uuid));
	/* So is a header whose volume key changed under the token (cryptsetup reencrypt). */
	GUARD(dmbyok_volume_binding(cd, &binding));
	device = crypt_get_device_name(cd);
	metadata = crypt_get_metadata_device_name(cd);
	v = (struct volume){
		.cd = cd,
		.device = (char *)device,
		.header = metadata && device && strcmp(metadata, device) ? (char *)metadata : NULL,
		.uuid = uuid,
		.token_id = token,
		.token = t,
		.binding = binding,
	};
	GUARD(dmbyok_volume_check_binding(&v));

	/*
	 * KMS access exactly as the CLI's without options: endpoint, CA bundle, profile and
	 * credentials from the environment and the AWS config files; the provider and region
	 * the token's.
	 */
	timeout_s = env_uint("DMBYOK_TOKEN_TIMEOUT", TOKEN_TIMEOUT_S_DEFAULT, TOKEN_TIMEOUT_S_MAX);
	attempts = env_uint("DMBYOK_TOKEN_ATTEMPTS", TOKEN_ATTEMPTS_DEFAULT, TOKEN_ATTEMPTS_MAX);
	kms = (struct kms_options){
		.provider = t->kms, /* the provider that wrapped it, as the token records */
		.timeout_ms = timeout_s * 1000U,
		.max_attempts = attempts,
	};
	r = dmbyok_kms_client_for(&kms, t->region, &c);
	if (r < 0)
		return r; /* explained by dmbyok_kms_client_for */

	crypt_logf(cd, CRYPT_LOG_DEBUG, "dmbyok: unwrapping the data key of %s under %s.", uuid,
	           t->key_arn);
	r = dmbyok_kms_decrypt(c, t->key_arn, t->ciphertext, t->context, &dek, NULL);
	if (r < 0) {
		log_kms_failure(c, r, uuid, t, timeout_s, attempts);
		return r;
	}
	/* The token's key check value: the key is this header's before cryptsetup's digest. */
	GUARD(dmbyok_token_verify_dek(t, dek, uuid, binding));
	*ret_dek = TAKE_PTR(dek);
	return 0;
}

_public_ int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer,
                                   size_t *buffer_len, void *usrptr)
{
	_cleanup_secret_ struct secret *dek = NULL;
	int r;

	log_setup();
	if (!cd || !buffer || !buffer_len)
		return -EINVAL;
	r = unwrap(cd, token, &dek);
	if (r < 0) {
		crypt_logf(cd, CRYPT_LOG_DEBUG, "dmbyok: token %d failed: %s (%d), returning %d.",
		           token, dmbyok_strerror(r), r, token_errno(r));
		return token_errno(r);
	}
	r = passphrase_new(dek, buffer, buffer_len);
	return r < 0 ? token_errno(r) : 0;
}

_public_ int cryptsetup_token_validate(struct crypt_device *cd, const char *json)
{
	_cleanup_token_ struct dmbyok_token *t = NULL;
	int r;

	log_setup();
	if (!json)
		return -EINVAL;
	/* Logs what is wrong: `cryptsetup token import` then refuses with that reason. */
	r = dmbyok_token_from_json(json, &t);
	return r < 0 ? -EINVAL : 0;
}

_public_ void cryptsetup_token_dump(struct crypt_device *cd, const char *json)
{
	_cleanup_token_ struct dmbyok_token *t = NULL;

	log_setup();
	dmbyok_log_quiet_push(); /* a malformed token is shown as such, not as an error */
	if (!json || dmbyok_token_from_json(json, &t) < 0) {
		dmbyok_log_quiet_pop();
		crypt_logf(cd, CRYPT_LOG_NORMAL,
		           "\tdmbyok:     malformed token (see "
		           "`cryptsetup token export`)\n");
		return;
	}
	dmbyok_log_quiet_pop();
	/* Never a secret here, nor the wrapped key: what an operator needs to find the key. */
	crypt_logf(cd, CRYPT_LOG_NORMAL, "\tdmbyok key: %s\n", t->key_id);
	crypt_logf(cd, CRYPT_LOG_NORMAL, "\tkey ARN:    %s\n", t->key_arn);
	crypt_logf(cd, CRYPT_LOG_NORMAL, "\tregion:     %s\n", t->region ? t->region : "(none)");
	crypt_logf(cd, CRYPT_LOG_NORMAL, "\tcontext:    %s\n",
	           json_object_to_json_string_ext(t->context, JSON_C_TO_STRING_PLAIN |
	                                                          JSON_C_TO_STRING_NOSLASHESCAPE));
	crypt_logf(cd, CRYPT_LOG_NORMAL, "\tversion:    %d (%s)\n", t->version,
	           t->version >= 2 ? "key check bound to the header" : "key check by UUID only");
	if (t->created)
		crypt_logf(cd, CRYPT_LOG_NORMAL, "\tcreated:    %s\n", t->created);
	if (t->rewrapped)
		crypt_logf(cd, CRYPT_LOG_NORMAL, "\trewrapped:  %s\n", t->rewrapped);
}

_public_ const char *cryptsetup_token_version(void)
{
	return DMBYOK_VERSION;
}
