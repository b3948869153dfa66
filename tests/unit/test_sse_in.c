/* test_sse_in.c - reading an upstream's event stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "engine/sse_in.h"

struct seen {
    char data[8][128];
    int n;
    int stop_after; /* 0 = never */
};

static bool collect(void *ctx, const char *d, size_t len) {
    struct seen *s = ctx;
    if (s->n < 8) {
        memcpy(s->data[s->n], d, len < 127 ? len : 127);
        s->data[s->n][len < 127 ? len : 127] = '\0';
    }
    s->n++;
    return !(s->stop_after && s->n >= s->stop_after);
}

static void test_lines_across_feeds(void **state) {
    (void)state;
    struct sse_in in;
    sse_in_init(&in, 1024);
    struct seen s = {0};
    static const char stream[] = ": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:{\"b\":2}\n\ndata: [DONE]\n\n";
    /* one byte at a time: the same events as all at once */
    for (size_t i = 0; i < sizeof stream - 1; i++) assert_int_equal(sse_in_feed(&in, stream + i, 1, collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.data[0], "{\"a\":1}");
    assert_string_equal(s.data[1], "{\"b\":2}");
    assert_string_equal(s.data[2], "[DONE]");
    struct seen all = {0};
    assert_int_equal(sse_in_feed(&in, stream, sizeof stream - 1, collect, &all), 0);
    assert_int_equal(all.n, 3);
    assert_string_equal(all.data[1], "{\"b\":2}");
    sse_in_free(&in);
}

static void test_bounds_and_stop(void **state) {
    (void)state;
    struct sse_in in;
    sse_in_init(&in, 16);
    struct seen s = {0};
    assert_int_equal(sse_in_feed(&in, "data: 0123456789", 16, collect, &s), 0);
    assert_int_equal(sse_in_feed(&in, "ABCDEF", 6, collect, &s), -1); /* one line over the bound */
    assert_int_equal(sse_in_feed(&in, "data: ok\n", 9, collect, &s), 0);  /* and it goes on */
    assert_int_equal(s.n, 1);
    assert_string_equal(s.data[0], "ok");
    struct seen st = {.stop_after = 1};
    assert_int_equal(sse_in_feed(&in, "data: 1\ndata: 2\n", 16, collect, &st), -1);
    assert_int_equal(st.n, 1);
    sse_in_free(&in);
}

static void test_events(void **state) {
    (void)state;
    struct sse_event ev;
    sse_event_parse("[DONE]", 6, &ev);
    assert_true(ev.done);
    sse_event_free(&ev);
    const char *chat = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\\u00e9\"},\"finish_reason\":null}]}";
    sse_event_parse(chat, strlen(chat), &ev);
    assert_true(ev.json);
    assert_int_equal(ev.text_len, 3);
    assert_memory_equal(ev.text, "h\xc3\xa9", 3);
    assert_int_equal(ev.finish, ENGINE_FINISH_NONE);
    sse_event_free(&ev);
    const char *comp = "{\"choices\":[{\"text\":\"x\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,"
                       "\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":3}}}";
    sse_event_parse(comp, strlen(comp), &ev);
    assert_int_equal(ev.text_len, 1);
    assert_int_equal(ev.finish, ENGINE_FINISH_LENGTH);
    assert_true(ev.have_usage);
    assert_int_equal(ev.prompt_tokens, 5);
    assert_int_equal(ev.completion_tokens, 2);
    assert_int_equal(ev.cached_tokens, 3);
    sse_event_free(&ev);
    const char *err = "{\"error\":{\"message\":\"boom\"}}";
    sse_event_parse(err, strlen(err), &ev);
    assert_true(ev.error);
    assert_string_equal(ev.message, "boom");
    sse_event_free(&ev);
    static const char *const junk[] = {"", "not json", "[1,2]", "{\"choices\":7}", "{\"choices\":[{\"delta\":3}]}",
                                       "{\"usage\":[]}", "{\"error\":null}"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        sse_event_parse(junk[i], strlen(junk[i]), &ev);
        assert_int_equal(ev.text_len, 0);
        assert_false(ev.done);
        sse_event_free(&ev);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_across_feeds),
        cmocka_unit_test(test_bounds_and_stop),
        cmocka_unit_test(test_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
