/* errors.h — OpenAI's error body, {"error": {"message", "type", "param", "code"}}. Pure. */
#ifndef LLMLIMIT_HTTP_ERRORS_H
#define LLMLIMIT_HTTP_ERRORS_H

#include "util/buf.h"

/* Appends the JSON error body (with a trailing "\n") to out. param and code may be NULL, which
 * writes JSON null. 0 or -ENOMEM. */
int http_error_body(struct buf *out, const char *message, const char *type, const char *param,
		    const char *code);

/* The OpenAI-style error type for a status: 400 "invalid_request_error", 401
 * "authentication_error"... falls back to "server_error" for 5xx, "invalid_request_error". */
const char *http_error_type(int status);

/* The reason phrase for a status ("Too Many Requests"), "Unknown" if none. */
const char *http_status_reason(int status);

#endif
