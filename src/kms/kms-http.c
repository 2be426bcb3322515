/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP client of the cloud KMS providers (kms-http.h): libcurl with a wiping allocator,
 * responses in locked memory, the retry pacing, and the record of a call's last attempt
 * that kms.c puts in the audit entry.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/ssl.h>

#include "kms-http.h"
#include "dmbyok/log.h"

struct kms_http {
	/*
	 * Connections (and TLS sessions, DNS answers) live in a share, so an agent's periodic
	 * checks do not pay a handshake each time; each request gets a fresh easy handle
	 * because libcurl keeps the last response (a data key's base64) in the handle's
	 * download buffer until it is freed. A client is used by one thread at a time, so
	 * the share needs no locks.
	 */
	CURLSH *share;
	char *ca_bundle;
	char errbuf[CURL_ERROR_SIZE];
};

struct recv_ctx {
	struct secret *body;
	int error;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

/*
 * libcurl's own heap holds credentials we cannot reach: its copies of CURLOPT_USERNAME and
 * CURLOPT_PASSWORD, the header list, the request it builds (with X-Amz-Security-Token and
 * Authorization), SigV4's intermediate keys and the download buffer. glibc's M_PERTURB
 * skips tcache-sized chunks, so those would outlive the transfer: give libcurl an
 * allocator that wipes every block it frees, and never lets realloc leave a copy behind.
 */
static void wipe_free(void *p)
{
	if (!p)
		return;
	dmbyok_secure_wipe(p, malloc_usable_size(p));
	free(p);
}

static void *wipe_malloc(size_t n)
{
	return malloc(n);
}

static void *wipe_calloc(size_t n, size_t size)
{
	return calloc(n, size);
}

static char *wipe_strdup(const char *s)
{
	return strdup(s);
}

static void *wipe_realloc(void *p, size_t n)
{
	size_t old;
	void *q;

	if (!p)
		return malloc(n);
	old = malloc_usable_size(p);
	if (n && n <= old)
		return p;
	q = malloc(n ? n : 1);
	if (!q)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	wipe_free(p);
	return q;
}

static void curl_init_once(void)
{
	/* Only takes effect if nobody initialised libcurl before us (nobody does in dmbyok). */
	curl_init_result = curl_global_init_mem(CURL_GLOBAL_DEFAULT, wipe_malloc, wipe_free,
	                                        wipe_realloc, wipe_strdup, wipe_calloc);
}

/* OpenSSL decrypts records in place: have it wipe the plaintext once it was delivered. */
static CURLcode on_ssl_ctx(CURL *curl, void *ssl_ctx, void *userdata)
{
	SSL_CTX_set_options(ssl_ctx, SSL_OP_CLEANSE_PLAINTEXT);
	return CURLE_OK;
}

int dmbyok_kms_http_new(const char *ca_bundle, struct kms_http **ret)
{
	_cleanup_(dmbyok_kms_http_freep) struct kms_http *h = NULL;

	(void)pthread_once(&curl_once, curl_init_once);
	if (curl_init_result != CURLE_OK)
		return log_error_errno(EIO, "Cannot initialise libcurl: %s",
		                       curl_easy_strerror(curl_init_result));

	h = calloc(1, sizeof(*h));
	ENSURE_ALLOC(h);
	if (ca_bundle) {
		h->ca_bundle = strdup(ca_bundle);
		ENSURE_ALLOC(h->ca_bundle);
	}
	h->share = curl_share_init();
	ENSURE_ALLOC(h->share);
	if (curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
	    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK)
		return log_error_errno(EIO, "Cannot set up libcurl's connection sharing.");
	*ret = TAKE_PTR(h);
	return 0;
}

void dmbyok_kms_http_free(struct kms_http *h)
{
	if (!h)
		return;
	if (h->share)
		curl_share_cleanup(h->share);
	free(h->ca_bundle);
	free(h);
}

void dmbyok_kms_http_response_done(struct kms_http_response *r)
{
	if (!r)
		return;
	dmbyok_secret_free(r->body);
	free(r->request_id);
	free(r->www_authenticate);
	*r = (struct kms_http_response){};
}

/* Responses grow in locked memory: a bigger secret, copy, wipe the old one. */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct recv_ctx *ctx = userdata;
	struct secret *b = ctx->body, *bigger = NULL;
	size_t n = size * nmemb, need;

	need = b->size + n + 1;
	if (need > KMS_HTTP_RESPONSE_MAX) {
		ctx->error = -E2BIG;
		return 0;
	}
	if (need > b->capacity) {
		size_t cap = b->capacity * 2 > need ? b->capacity * 2 : need;

		if (dmbyok_secret_new(cap, &bigger) < 0) {
			ctx->error = -ENOMEM;
			return 0;
		}
		memcpy(bigger->data, b->data, b->size);
		bigger->size = b->size;
		dmbyok_secret_free(b);
		ctx->body = b = bigger;
	}
	memcpy(b->data + b->size, ptr, n);
	b->size += n;
	b->data[b->size] = '\0';
	return n;
}

int dmbyok_kms_http_secret_header(const char *name, const char *value, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	size_t n = strlen(name), m = strlen(value);

	GUARD(dmbyok_secret_new(n + 2 + m + 1, &s));
	memcpy(s->data, name, n);
	memcpy(s->data + n, ": ", 2);
	memcpy(s->data + n + 2, value, m);
	s->data[n + 2 + m] = '\0';
	s->size = n + 2 + m;
	*ret = TAKE_PTR(s);
	return 0;
}

static int header_add(struct curl_slist **list, const char *line)
{
	struct curl_slist *l = curl_slist_append(*list, line);

	ENSURE_ALLOC(l);
	*list = l;
	return 0;
}

/* curl_slist_append copied the lines into the heap: wipe them, some carry credentials. */
static void headers_free(struct curl_slist *list)
{
	for (struct curl_slist *l = list; l; l = l->next)
		dmbyok_secure_wipe(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

static int curl_to_errno(CURL *curl, CURLcode cc, const struct recv_ctx *ctx)
{
	long os_errno = 0;

	switch (cc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		(void)curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
		if (os_errno == EHOSTUNREACH || os_errno == ENETUNREACH || os_errno == ETIMEDOUT)
			return -EHOSTUNREACH;
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -ECONNRESET;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		/* Not an outage: the trust configuration (or an interceptor) is wrong. */
		return -EINVAL;
	case CURLE_WRITE_ERROR:
		return ctx->error == -ENOMEM ? -ENOMEM : -EPROTO;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	default:
		return -EPROTO;
	}
}

/* The last attempt of the call in flight (dmbyok_kms_note_attempt), for kms.c's audit. */
static _Thread_local struct {
	char region[64];
	char request_id[128];
} last_attempt;

/* Only a plain token: these come from the network. */
static void note_copy(char *dst, size_t size, const char *s)
{
	size_t n = 0;

	dst[0] = '\0';
	if (!s)
		return;
	for (; s[n]; n++)
		if (n + 1 >= size || (unsigned char)s[n] <= ' ' || (unsigned char)s[n] >= 0x7f ||
		    s[n] == '"' || s[n] == '\\')
			return;
	memcpy(dst, s, n + 1);
}

void dmbyok_kms_note_attempt(const char *region, const char *request_id)
{
	note_copy(last_attempt.region, sizeof(last_attempt.region), region);
	note_copy(last_attempt.request_id, sizeof(last_attempt.request_id), request_id);
}

void dmbyok_kms_attempt_reset(void)
{
	last_attempt.region[0] = last_attempt.request_id[0] = '\0';
}

void dmbyok_kms_attempt_get(const char **ret_region, const char **ret_request_id)
{
	*ret_region = last_attempt.region;
	*ret_request_id = last_attempt.request_id;
}

/*
 * A KMS request (signed "aws:amz:REGION:kms") reports its region and AWS's request id to the
 * KMS audit entry (kms.c); STS and metadata requests made for the credentials do not.
 */
static void note_kms_attempt(CURL *curl, const struct kms_http_request *req, bool answered)
{
	const char *scope = req->sigv4, *end;
	struct curl_header *hdr = NULL;
	char region[64];

	if (!scope || strncmp(scope, "aws:amz:", 8) != 0)
		return;
	scope += 8;
	end = strchr(scope, ':');
	if (!end || strcmp(end, ":kms") != 0 || (size_t)(end - scope) >= sizeof(region))
		return;
	memcpy(region, scope, (size_t)(end - scope));
	region[end - scope] = '\0';
	if (answered &&
	    curl_easy_header(curl, "x-amzn-RequestId", 0, CURLH_HEADER, -1, &hdr) != CURLHE_OK &&
	    curl_easy_header(curl, "x-amz-request-id", 0, CURLH_HEADER, -1, &hdr) != CURLHE_OK)
		hdr = NULL;
	dmbyok_kms_note_attempt(region, hdr ? hdr->value : NULL);
}

/* The first of the named headers the answer carries, copied; NULL when none. */
static int header_dup(CURL *curl, const char *const *names, char **ret)
{
	struct curl_header *hdr = NULL;

	*ret = NULL;
	for (; *names; names++)
		if (curl_easy_header(curl, *names, 0, CURLH_HEADER, -1, &hdr) == CURLHE_OK) {
			*ret = strdup(hdr->value);
			return *ret ? 0 : -ENOMEM;
		}
	return 0;
}

/* WWW-Authenticate: the Bearer challenge among several (Key Vault may add a PoP one). */
static int challenge_dup(CURL *curl, char **ret)
{
	struct curl_header *hdr = NULL;
	size_t n = 1;

	*ret = NULL;
	for (size_t i = 0; i < n; i++) {
		if (curl_easy_header(curl, "WWW-Authenticate", i, CURLH_HEADER, -1, &hdr) !=
		    CURLHE_OK)
			break;
		n = hdr->amount;
		if (i == 0 || !strncasecmp(hdr->value, "Bearer ", 7)) {
			free(*ret);
			*ret = strdup(hdr->value);
			if (!*ret)
				return -ENOMEM;
			if (!strncasecmp(hdr->value, "Bearer ", 7))
				break;
		}
	}
	return 0;
}

int dmbyok_kms_http_perform(struct kms_http *h, const struct kms_http_request *req,
                            struct kms_http_response *ret, const char **ret_detail)
{
	_cleanup_secret_ struct secret *token_header = NULL;
	struct curl_slist *headers = NULL;
	struct recv_ctx ctx = {};
	unsigned timeout = req->timeout_ms ? req->timeout_ms : KMS_HTTP_DEFAULT_TIMEOUT_MS;
	unsigned connect_timeout =
	    req->connect_timeout_ms ? req->connect_timeout_ms : KMS_HTTP_CONNECT_TIMEOUT_MS;
	CURL *curl = NULL;
	CURLcode cc;
	long status = 0, connects = 0;
	int r;

	*ret = (struct kms_http_response){};
	if (ret_detail)
		*ret_detail = NULL;

	r = dmbyok_secret_new(4096, &ctx.body);
	if (r < 0)
		return r;
	ctx.body->size = 0;

	for (const char *const *p = req->headers; p && *p; p++) {
		r = header_add(&headers, *p);
		if (r < 0)
			goto out;
	}
	if (req->session_token) {
		r = dmbyok_kms_http_secret_header(
		    "X-Amz-Security-Token", (const char *)req->session_token->data, &token_header);
		if (r >= 0)
			r = header_add(&headers, (const char *)token_header->data);
		if (r < 0)
			goto out;
	}
	for (const struct secret *const *p = req->secret_headers; p && *p; p++) {
		r = header_add(&headers, (const char *)(*p)->data);
		if (r < 0)
			goto out;
	}

	curl = curl_easy_init();
	if (!curl) {
		r = -ENOMEM;
		goto out;
	}
	h->errbuf[0] = '\0';
	curl_easy_setopt(curl, CURLOPT_SHARE, h->share);
	curl_easy_setopt(curl, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(curl, CURLOPT_URL, req->url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	/* Verification is never optional; only the trust anchors are configurable. */
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->ca_bundle)
		curl_easy_setopt(curl, CURLOPT_CAINFO, h->ca_bundle);
	curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(connect_timeout < timeout ? connect_timeout : timeout));
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "dmbyok/" DMBYOK_VERSION);
	if (req->no_proxy)
		curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ctx);

	if (!strcmp(req->method, "POST") || !strcmp(req->method, "PUT")) {
		/* SigV4's payload hash covers POSTFIELDS only, so the body always goes there. */
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		if (strcmp(req->method, "POST"))
			curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
	} else {
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
	}

	if (req->sigv4) {
		curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, req->sigv4);
		curl_easy_setopt(curl, CURLOPT_USERNAME, req->access_key_id);
		curl_easy_setopt(curl, CURLOPT_PASSWORD, req->secret_access_key);
	}

	cc = curl_easy_perform(curl);

	r = curl_to_errno(curl, cc, &ctx);
	note_kms_attempt(curl, req, r >= 0);
	if (r < 0) {
		if (ret_detail)
			*ret_detail = ctx.error == -E2BIG ? "response too large"
			              : h->errbuf[0]      ? h->errbuf
			                                  : curl_easy_strerror(cc);
		goto out;
	}
	(void)curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	(void)curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
	log_debug("%s %s: HTTP %ld%s", req->method, req->url, status,
	          connects ? "" : " (reused connection)");
	if (req->want_headers &&
	    (header_dup(curl,
	                (const char *const[]){ "x-amzn-RequestId", "x-amz-request-id",
	                                       "x-ms-request-id", NULL },
	                &ret->request_id) < 0 ||
	     challenge_dup(curl, &ret->www_authenticate) < 0)) {
		dmbyok_kms_http_response_done(ret);
		r = -ENOMEM;
		goto out;
	}
	ret->status = status;
	ret->body = TAKE_PTR(ctx.body);
out:
	/*
	 * Frees curl's copies of the secret key and of the response (wiped by wipe_free); the
	 * connection stays. Replacing the key first drops curl's copy even if it kept the handle.
	 */
	if (curl) {
		if (req->sigv4)
			curl_easy_setopt(curl, CURLOPT_PASSWORD, "");
		curl_easy_cleanup(curl);
	}
	dmbyok_secret_free(ctx.body);
	headers_free(headers);
	return r;
}

int dmbyok_kms_metadata_get(struct kms_http *http, const char *url, const char *const *headers,
                            unsigned timeout_ms, unsigned connect_timeout_ms,
                            struct kms_http_response *ret, const char **ret_detail)
{
	return dmbyok_kms_http_perform(http,
	                               &(struct kms_http_request){
	                                   .method = "GET",
	                                   .url = url,
	                                   .headers = headers,
	                                   .timeout_ms = timeout_ms,
	                                   .connect_timeout_ms = connect_timeout_ms,
	                                   .no_proxy = true,
	                               },
	                               ret, ret_detail);
}

int dmbyok_kms_token_post(struct kms_http *http, const char *url, const struct secret *form,
                          unsigned timeout_ms, struct kms_http_response *ret,
                          const char **ret_detail)
{
	static const char *const headers[] = { "Content-Type: application/x-www-form-urlencoded",
		                               "Accept: application/json", NULL };

	return dmbyok_kms_http_perform(http,
	                               &(struct kms_http_request){
	                                   .method = "POST",
	                                   .url = url,
	                                   .headers = headers,
	                                   .body = (const char *)form->data,
	                                   .body_len = form->size,
	                                   .timeout_ms = timeout_ms,
	                               },
	                               ret, ret_detail);
}

void dmbyok_kms_retry_init(struct kms_retry *rt, unsigned max_attempts)
{
	rt->max_attempts = max_attempts ? max_attempts : KMS_RETRY_DEFAULT_ATTEMPTS;
	rt->quota = KMS_RETRY_QUOTA;
}

unsigned dmbyok_kms_retry_backoff_ms(unsigned attempt)
{
	unsigned ceiling = 20000;

	/* Full jitter: uniform in [0, min(20 s, 100 ms * 2^(attempt-1))]. */
	if (attempt == 0)
		attempt = 1;
	if (attempt <= 8)
		ceiling = 100U << (attempt - 1);
	if (ceiling > 20000)
		ceiling = 20000;
	return arc4random_uniform(ceiling + 1);
}

bool dmbyok_kms_errno_is_retryable(int r)
{
	switch (r) {
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -ETIMEDOUT:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return true;
	default:
		return false;
	}
}

static unsigned retry_cost(int r)
{
	return r == -ETIMEDOUT ? KMS_RETRY_TIMEOUT_COST : KMS_RETRY_COST;
}

bool dmbyok_kms_retry_acquire(struct kms_retry *rt, int r)
{
	unsigned cost = retry_cost(r);

	if (rt->quota < cost)
		return false;
	rt->quota -= cost;
	return true;
}

void dmbyok_kms_retry_release(struct kms_retry *rt, int r, bool retried)
{
	rt->quota += retried ? retry_cost(r) : 1;
	if (rt->quota > KMS_RETRY_QUOTA)
		rt->quota = KMS_RETRY_QUOTA;
}

void dmbyok_kms_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}
