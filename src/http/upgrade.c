/* upgrade.c - GET /v1/rpc: the WebSocket handshake (RFC 6455 section 4.2)
 * on libmicrohttpd's upgrade support; the session itself is rpc/ws.c's.
 *
 * The upgrade request has passed every rule of http__admit (Host, Origin,
 * drain, per-address cap). Its keys decide what the session may call: the
 * API key for inference and the models, the admin rules of /admin (and a
 * page of corral's own origin, as /admin never answers other origins) for
 * admin methods. With an API key set, an upgrade without it is refused
 * with 401; the admin key can ride in Authorization with the API key in
 * x-api-key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nettle/base64.h>
#include <nettle/sha1.h>

#include "http/internal.h"
#include "rpc/ws.h"
#include "util/log.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* WebSocket sessions at once. */
#define HTTP_WS_MAX 1024

/* true if the comma-separated header value h lists token (any case). */
static bool http__has_token(const char *h, const char *token) {
    size_t n = strlen(token);
    while (h && *h) {
        while (*h == ' ' || *h == '\t' || *h == ',') h++;
        const char *e = h;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > h && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - h) == n && strncasecmp(h, token, n) == 0) return true;
        h = e;
    }
    return false;
}

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)). */
static void http__ws_accept(const char *key, char out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1]) {
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_init(&sha);
    sha1_update(&sha, strlen(key), (const uint8_t *)key);
    sha1_update(&sha, strlen(WS_GUID), (const uint8_t *)WS_GUID);
    sha1_digest(&sha, SHA1_DIGEST_SIZE, digest);
    base64_encode_raw((char *)out, SHA1_DIGEST_SIZE, digest);
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* A valid Sec-WebSocket-Key: base64 of 16 bytes (24 characters). */
static bool http__ws_key_ok(const char *key) {
    if (!key || strlen(key) != 24) return false;
    struct base64_decode_ctx d;
    uint8_t raw[BASE64_DECODE_LENGTH(24)];
    size_t n = sizeof raw;
    base64_decode_init(&d);
    return base64_decode_update(&d, &n, raw, 24, key) && base64_decode_final(&d) && n == 16;
}

struct http__ws_up {
    struct http_server *srv;
    bool can_infer, can_admin;
};

static void http__ws_release(void *ctx) { MHD_upgrade_action(ctx, MHD_UPGRADE_ACTION_CLOSE); }

static void http__ws_upgraded(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra,
                              size_t n_extra, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh) {
    (void)c;
    (void)con_cls;
    struct http__ws_up *up = cls;
    struct http_server *s = up->srv;
    struct ws_session_params p = {.fd = sock, .extra = extra, .n_extra = n_extra, .can_infer = up->can_infer,
                                  .can_admin = up->can_admin, .admin_keyed = s->admin_api_key != NULL,
                                  .release = http__ws_release, .release_ctx = urh};
    free(up);
    struct corral_err err;
    /* under ws_mu, so the hub cannot be freed meanwhile (http__rpc_close_all) */
    pthread_mutex_lock(&s->ws_mu);
    enum corral_status st = s->ws ? ws_hub_add(s->ws, &p, &err) : CORRAL_UNAVAILABLE;
    pthread_mutex_unlock(&s->ws_mu);
    if (st != CORRAL_OK) {
        log_warn("rpc: websocket session not started: %s", s->ws ? err.message : "shutting down");
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    }
}

static struct ws_hub *http__hub(struct http_server *s) {
    pthread_mutex_lock(&s->ws_mu);
    if (!s->ws) {
        struct ws_hub_params hp = {.svc = s->svc, .max_message = s->max_rpc_message,
                                   .max_inflight = s->rpc_max_inflight, .max_sessions = HTTP_WS_MAX};
        s->ws = ws_hub_new(&hp);
    }
    struct ws_hub *h = s->ws;
    pthread_mutex_unlock(&s->ws_mu);
    return h;
}

enum MHD_Result http__rpc_upgrade(struct http_server *s, struct conn *k) {
    struct MHD_Connection *c = k->out.c;
    const struct http_out *o = &k->out;
    const char *upgrade = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
    const char *connection = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONNECTION);
    const char *version = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    if (!upgrade || !http__has_token(upgrade, "websocket") || !connection || !http__has_token(connection, "upgrade"))
        return http__fail(o, CORRAL_INVALID_REQUEST, NULL, "websocket_required", NULL, "%s",
                          "/v1/rpc speaks JSON-RPC over WebSocket: send a WebSocket upgrade request "
                          "(Connection: Upgrade, Upgrade: websocket)");
    if (!version || strcmp(version, "13") != 0) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        http__headers(o, r, NULL);
        MHD_add_response_header(r, "Sec-WebSocket-Version", "13");
        enum MHD_Result ret = http__queue(o, MHD_HTTP_UPGRADE_REQUIRED, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!http__ws_key_ok(key))
        return http__fail(o, CORRAL_INVALID_REQUEST, NULL, "websocket_required", NULL, "%s",
                          "Sec-WebSocket-Key must be the base64 of 16 bytes");
    bool can_infer = http__authorized(s, c);
    bool can_admin = o->same_origin && http__admin_allowed(s, c) == CORRAL_OK;
    if (!can_infer)
        return http__fail(o, CORRAL_UNAUTHORIZED, NULL, NULL, NULL, "%s",
                          "invalid or missing API key (send 'Authorization: Bearer <key>' or 'x-api-key' "
                          "on the upgrade request)");
    struct ws_hub *hub = http__hub(s);
    if (!hub) return http__reply_json(o, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    if (ws_hub_count(hub) >= HTTP_WS_MAX)
        return http__fail(o, CORRAL_OVERLOADED, NULL, "too_many_sessions", NULL, "%s",
                          "as many WebSocket sessions are open as this server allows; retry later");
    struct http__ws_up *up = calloc(1, sizeof *up);
    if (!up) return http__reply_json(o, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    up->srv = s;
    up->can_infer = can_infer;
    up->can_admin = can_admin;
    struct MHD_Response *r = MHD_create_response_for_upgrade(http__ws_upgraded, up);
    if (!r) {
        free(up);
        return MHD_NO;
    }
    char accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1];
    http__ws_accept(key, accept);
    MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    if (o->allow_origin[0]) MHD_add_response_header(r, "Access-Control-Allow-Origin", o->allow_origin);
    enum MHD_Result ret = http__queue(o, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    if (ret != MHD_YES) free(up);
    /* the session is not a request in flight: the drain waits for its calls, not for it */
    if (k->counted) {
        service_leave(s->svc);
        k->counted = false;
    }
    return ret;
}

void http__rpc_close_all(struct http_server *s) {
    pthread_mutex_lock(&s->ws_mu);
    struct ws_hub *h = s->ws;
    s->ws = NULL;
    pthread_mutex_unlock(&s->ws_mu);
    ws_hub_free(h);
}
