#include "http/errors.h"

#include <string.h>

int http_error_body(struct buf *out, const char *message, const char *type, const char *param,
		    const char *code)
{
	int err = 0;

	err |= buf_puts(out, "{\"error\":{\"message\":");
	err |= buf_put_json_str(out, message, strlen(message));
	err |= buf_puts(out, ",\"type\":");
	err |= buf_put_json_str(out, type, strlen(type));
	err |= buf_puts(out, ",\"param\":");
	err |= param ? buf_put_json_str(out, param, strlen(param)) : buf_puts(out, "null");
	err |= buf_puts(out, ",\"code\":");
	err |= code ? buf_put_json_str(out, code, strlen(code)) : buf_puts(out, "null");
	err |= buf_puts(out, "}}\n");
	return err ? -12 /* -ENOMEM */ : 0;
}

const char *http_error_type(int status)
{
	switch (status) {
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "not_found_error";
	case 429: return "rate_limit_error";
	default: return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

const char *http_status_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}
