/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The HTTP client the cloud KMS providers (aws/, gcp/, azure/) share: one libcurl handle per
 * client, responses in locked memory, SigV4 when asked for, the SDKs' "standard" retry
 * pacing, and the record of the last attempt of the call in flight, which kms.c puts in the
 * call's audit entry. Internal to the library; depends on nothing else of the KMS layer.
 */

#include <stdbool.h>
#include <stddef.h>

#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

#define KMS_HTTP_DEFAULT_TIMEOUT_MS 10000U
#define KMS_HTTP_CONNECT_TIMEOUT_MS 3000U
#define KMS_HTTP_RESPONSE_MAX       (1U << 20)
#define KMS_RETRY_DEFAULT_ATTEMPTS  3U

struct kms_http;

struct kms_http_request {
	const char *method; /* "GET", "PUT", "POST" */
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
	const char *body;
	size_t body_len;
	/* SigV4: provider string "aws:amz:REGION:SERVICE" and the key pair; NULL: unsigned. */
	const char *sigv4;
	const char *access_key_id;
	const char *secret_access_key;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	bool no_proxy; /* metadata endpoints must never go through a proxy */
	/* Sent as X-Amz-Security-Token (and so signed); the header is built in locked memory. */
	const struct secret *session_token;
	/* Headers that carry a credential: NULL-terminated "Name: value" lines in locked memory. */
	const struct secret *const *secret_headers;
	/*
	 * Fill kms_http_response's request_id and www_authenticate. Asked for, since the caller
	 * must then pass the response to dmbyok_kms_http_response_done even after taking its
	 * body (callers that do not ask may keep taking the body alone).
	 */
	bool want_headers;
};

struct kms_http_response {
	long status;
	struct secret *body; /* NUL-terminated; locked memory since it may carry plaintext */
	/*
	 * With want_headers, the response headers the providers read, plain heap strings (no
	 * secrets), NULL when absent: the KMS's request id (x-amzn-RequestId or
	 * x-amz-request-id, x-ms-request-id) and WWW-Authenticate (the Bearer challenge when
	 * there are several).
	 */
	char *request_id;
	char *www_authenticate;
};

int dmbyok_kms_http_new(const char *ca_bundle, struct kms_http **ret);
void dmbyok_kms_http_free(struct kms_http *h);
DEFINE_CLEANUP_FUNC(struct kms_http *, dmbyok_kms_http_free);
/*
 * One attempt. Transport failures return a negative errno (-ECONNREFUSED, -ETIMEDOUT,
 * -ECONNRESET, -EHOSTUNREACH, -EPROTO, -EINVAL for a TLS verification failure) and set
 * ret_detail (a static string). Any HTTP status is success here.
 */
int dmbyok_kms_http_perform(struct kms_http *h, const struct kms_http_request *req,
                            struct kms_http_response *ret, const char **ret_detail);
void dmbyok_kms_http_response_done(struct kms_http_response *r);
/* "Name: value" in locked memory, for a header that carries a credential. */
int dmbyok_kms_http_secret_header(const char *name, const char *value, struct secret **ret);

/* SDK "standard" retry mode: attempts, full-jitter backoff and a retry quota. */
struct kms_retry {
	unsigned max_attempts;
	unsigned quota; /* tokens left; retries stop when exhausted */
};

#define KMS_RETRY_QUOTA        500U
#define KMS_RETRY_COST         5U
#define KMS_RETRY_TIMEOUT_COST 10U

void dmbyok_kms_retry_init(struct kms_retry *r, unsigned max_attempts);
/* Backoff before attempt `attempt + 1` (attempt counts from 1), in milliseconds. */
unsigned dmbyok_kms_retry_backoff_ms(unsigned attempt);
bool dmbyok_kms_errno_is_retryable(int r);
/* Takes tokens for a retry after error r; false when the quota is exhausted. */
bool dmbyok_kms_retry_acquire(struct kms_retry *rt, int r);
void dmbyok_kms_retry_release(struct kms_retry *rt, int r, bool retried);
void dmbyok_kms_sleep_ms(unsigned ms);

/*
 * The HTTP the token sources share, one attempt each, results as dmbyok_kms_http_perform's.
 *
 * A GET from a cloud's instance metadata endpoint (GCE's metadata server, Azure's IMDS):
 * never through a proxy, which cannot reach the host's link-local service, and with a short
 * connect timeout, since off that cloud nothing answers at all.
 */
int dmbyok_kms_metadata_get(struct kms_http *http, const char *url, const char *const *headers,
                            unsigned timeout_ms, unsigned connect_timeout_ms,
                            struct kms_http_response *ret, const char **ret_detail);
/* An OAuth 2.0 token request: the form (locked, it carries the credential) POSTed, JSON back. */
int dmbyok_kms_token_post(struct kms_http *http, const char *url, const struct secret *form,
                          unsigned timeout_ms, struct kms_http_response *ret,
                          const char **ret_detail);

/*
 * A provider reports each attempt of the call in flight (several with retries): the region
 * it went to and the KMS's request id, NULL when there was no answer (dmbyok_kms_http_perform does
 * it for AWS KMS requests). Per thread, since a client is used by one thread at a time.
 */
void dmbyok_kms_note_attempt(const char *region, const char *request_id);
/* kms.c around each call: forget the last attempt, then read it ("" when not reported). The
 * strings stay valid on this thread until the next note or reset. */
void dmbyok_kms_attempt_reset(void);
void dmbyok_kms_attempt_get(const char **ret_region, const char **ret_request_id);
