/*
 * tests/core/test_msg.c - message ids (layout, order, uniqueness), UTF-8
 * validation, the JSON wire form (byte for byte what json-c writes) and its
 * parsing, the ISO time stamps, room ids, metrics text.
 */
#include "config.h"

#include "../../core/core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>
#include <time.h>

static void id_layout(void **state)
{
    (void)state;
    ids g;
    ids_init(&g, 5);
    int64_t now = IDS_EPOCH_MS + 1000;
    uint64_t a = ids_next(&g, now);
    assert_int_equal(ids_time_ms(a), now);
    assert_int_equal(ids_node(a), 5);
    assert_int_equal(a & 0xfff, 0);
    uint64_t b = ids_next(&g, now);
    assert_true(b > a);
    assert_int_equal(b & 0xfff, 1);
    /* clock going back: still increasing */
    uint64_t c = ids_next(&g, now - 500);
    assert_true(c > b);
    /* sequence exhausted: borrows the next ms, still increasing */
    uint64_t last = c;
    for (int i = 0; i < 5000; i++) {
        uint64_t n = ids_next(&g, now);
        assert_true(n > last);
        last = n;
    }
    /* another node never collides in the same ms */
    ids h;
    ids_init(&h, 6);
    assert_int_not_equal(ids_next(&h, now), a);
    assert_int_equal(ids_node(ids_next(&h, now)), 6);
}

static void id_parse(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(ids_parse("18446744073709551615", 20, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(ids_parse("18446744073709551616", 20, &v), -1);
    assert_int_equal(ids_parse("012", 3, &v), -1);
    assert_int_equal(ids_parse("-1", 2, &v), -1);
    assert_int_equal(ids_parse("", 0, &v), -1);
    assert_int_equal(ids_parse("0", 1, &v), 0);
}

static void utf8(void **state)
{
    (void)state;
    assert_true(utf8_valid("hello", 5));
    assert_true(utf8_valid("\xec\x95\x88\xeb\x85\x95", 6)); /* 안녕 */
    assert_true(utf8_valid("\xf0\x9f\x98\x80", 4));         /* emoji */
    assert_false(utf8_valid("\xc0\xaf", 2));                /* overlong */
    assert_false(utf8_valid("\xe0\x80\xaf", 3));            /* overlong */
    assert_false(utf8_valid("\xed\xa0\x80", 3));            /* surrogate */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4));        /* > U+10FFFF */
    assert_false(utf8_valid("\xe4\xbd", 2));                /* truncated */
    assert_false(utf8_valid("a\0b", 3));                    /* NUL */
    assert_false(utf8_valid("\x80", 1));
}

static void rooms(void **state)
{
    (void)state;
    int64_t lo, hi;
    assert_int_equal(room_parse("4&3", &lo, &hi), CHATD_OK);
    assert_int_equal(lo, 3);
    assert_int_equal(hi, 4);
    char buf[CHATD_ROOM_ID_MAX];
    assert_int_equal(room_format(buf, sizeof(buf), hi, lo), 3);
    assert_string_equal(buf, "3&4");
    assert_int_equal(room_parse("3&3", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("0&3", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("03&4", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("3&", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("a&b", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("3&4&5", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("-3&4", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse("9223372036854775808&1", &lo, &hi), CHATD_ERR_INVALID);
    assert_int_equal(room_parse(NULL, &lo, &hi), CHATD_ERR_INVALID);
    /* the longest room fits CHATD_ROOM_ID_MAX exactly */
    assert_int_equal(room_parse("9223372036854775807&9223372036854775806", &lo, &hi), CHATD_OK);
    assert_int_equal(room_format(buf, sizeof(buf), lo, hi), CHATD_ROOM_ID_MAX - 1);
    assert_string_equal(buf, "9223372036854775806&9223372036854775807");
    assert_int_equal(room_format(buf, sizeof(buf) - 1, lo, hi), -1);
    assert_string_equal(buf, "");
    assert_int_equal(room_format(buf, sizeof(buf), 5, 5), -1);
    assert_int_equal(room_format(buf, sizeof(buf), 0, 5), -1);
    assert_int_equal(room_format(buf, sizeof(buf), -1, 5), -1);

    /* a message's room is canonical, and its two members are at hand */
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .id = 1,
                          .room_id = "17&3",
                          .writer_id = 17,
                          .writer = "seventeen",
                          .text = "hi",
                          .text_len = 2};
    chatd_msg *m;
    assert_int_equal(msg_create(&f, &m), CHATD_OK);
    assert_string_equal(msg_room(m), "3&17");
    msg_room_members(m, &lo, &hi);
    assert_int_equal(lo, 3);
    assert_int_equal(hi, 17);
    msg_unref(m);
}

static void json_round_trip(void **state)
{
    (void)state;
    const char text[] = "hi \"there\" </script> \xec\x95\x88";
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .id = 123456789,
                          .room_id = "3&4",
                          .writer_id = 3,
                          .writer = "alice",
                          .text = text,
                          .text_len = sizeof(text) - 1,
                          .time_ms = INT64_C(1795633200123)};
    chatd_msg *m;
    assert_int_equal(msg_create(&f, &m), CHATD_OK);
    size_t len;
    const char *json = msg_json(m, &len);
    assert_non_null(json);
    assert_ptr_equal(msg_json(m, NULL), json); /* encoded once */
    assert_non_null(strstr(json, "\"id\":\"123456789\""));
    assert_non_null(strstr(json, "\"type\":\"chat\""));
    assert_non_null(strstr(json, "\"roomId\":\"3&4\""));
    assert_non_null(strstr(json, "\"writerId\":3"));
    assert_non_null(strstr(json, "\"timestamp\":\"2026-11-25T19:00:00.123Z\""));
    chatd_msg *back;
    assert_int_equal(msg_parse_json(json, len, &back), CHATD_OK);
    assert_int_equal(msg_id(back), 123456789);
    assert_string_equal(msg_room(back), "3&4");
    assert_string_equal(msg_writer(back), "alice");
    assert_int_equal(msg_writer_id(back), 3);
    assert_int_equal(msg_time_ms(back), INT64_C(1795633200123));
    size_t tl;
    assert_string_equal(msg_text(back, &tl), text);
    assert_int_equal(tl, sizeof(text) - 1);
    /* set_text only while mutable (the filter stage) */
    assert_int_equal(msg_set_text(back, "x", 1), CHATD_ERR_INVALID);
    msg_set_mutable(back, true);
    assert_int_equal(msg_set_text(back, "x", 1), CHATD_OK);
    assert_int_equal(msg_set_text(back, "\xff", 1), CHATD_ERR_INVALID);
    msg_unref(back);
    /* the position: the id until set; the only holder sets it at will, a
     * shared message (one being published) once, from unset */
    assert_true(msg_pos(m) == 123456789);
    assert_int_equal(msg_set_pos(m, 0), CHATD_ERR_INVALID);
    assert_int_equal(msg_set_pos(m, 7), CHATD_OK);
    assert_int_equal(msg_set_pos(m, 9), CHATD_OK);
    assert_true(msg_pos(m) == 9);
    assert_ptr_equal(msg_ref(m), m);
    assert_int_equal(msg_set_pos(m, 10), CHATD_ERR_INVALID); /* shared and set */
    assert_int_equal(msg_set_pos(m, 9), CHATD_OK);           /* the same again */
    assert_true(msg_pos(m) == 9);
    msg_unref(m);
    msg_unref(m);
    assert_int_equal(msg_create(&f, &m), CHATD_OK); /* a fresh one, position unset */
    assert_ptr_equal(msg_ref(m), m);
    assert_int_equal(msg_set_pos(m, 42), CHATD_OK); /* shared, unset: once */
    assert_true(msg_pos(m) == 42);
    assert_int_equal(msg_set_pos(m, 43), CHATD_ERR_INVALID);
    msg_unref(m);
    msg_unref(m);

    chatd_msg_fields r = {.size = sizeof(r),
                          .kind = CHATD_MSG_READ,
                          .id = 124,
                          .room_id = "3&4",
                          .writer_id = 4,
                          .writer = "bob",
                          .up_to = 123,
                          .time_ms = 1000};
    assert_int_equal(msg_create(&r, &m), CHATD_OK);
    json = msg_json(m, &len);
    assert_non_null(strstr(json, "\"type\":\"read\""));
    assert_non_null(strstr(json, "\"upTo\":\"123\""));
    assert_non_null(strstr(json, "\"memberId\":4"));
    assert_int_equal(msg_parse_json(json, len, &back), CHATD_OK);
    assert_int_equal(msg_kind(back), CHATD_MSG_READ);
    assert_int_equal(msg_up_to(back), 123);
    msg_unref(back);
    msg_unref(m);
}

/* The wire form as json-c writes it (the encoder msg_json replaced). */
static char *jsonc_form(chatd_msg *m)
{
    json_object *o = json_object_new_object();
    char buf[32], ts[96];
    bool chat = msg_kind(m) == CHATD_MSG_CHAT;
    int64_t low;
    msg_room_members(m, &low, NULL);
    json_object_object_add(o, "type", json_object_new_string(chat ? "chat" : "read"));
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)msg_id(m));
    json_object_object_add(o, "id", json_object_new_string(buf));
    json_object_object_add(o, "roomId", json_object_new_string(msg_room(m)));
    json_object_object_add(o, "writer", json_object_new_string(msg_writer(m)));
    json_object_object_add(o, "writerId", json_object_new_int64(msg_writer_id(m)));
    if (chat) {
        size_t n;
        const char *t = msg_text(m, &n);
        json_object_object_add(o, "message", json_object_new_string_len(t, (int)n));
        if (msg_idem_key(m))
            json_object_object_add(o, "idempotencyKey", json_object_new_string(msg_idem_key(m)));
    } else {
        json_object_object_add(o, "memberId", json_object_new_int64(msg_writer_id(m)));
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)msg_up_to(m));
        json_object_object_add(o, "upTo", json_object_new_string(buf));
    }
    time_t sec = (time_t)(msg_time_ms(m) / 1000);
    struct tm tm;
    assert_non_null(gmtime_r(&sec, &tm));
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(msg_time_ms(m) % 1000));
    json_object_object_add(o, "timestamp", json_object_new_string(ts));
    char *out = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return out;
}

/* Every ASCII byte (NUL aside), multi-byte UTF-8, keys and both kinds, at
 * times from 1970 to 9999: the same bytes as json-c. */
static void json_as_jsonc(void **state)
{
    (void)state;
    char text[400];
    size_t n = 0;
    for (int ch = 1; ch < 0x80; ch++)
        text[n++] = (char)ch;
    memcpy(text + n, "\xc3\xa9\xec\x95\x88\xf0\x9f\x98\x80", 9);
    n += 9;
    srand(15);
    for (int i = 0; i < 2000; i++) {
        char t[64];
        size_t tn = 1 + (size_t)rand() % 40;
        for (size_t k = 0; k < tn; k++)
            t[k] = text[(size_t)rand() % (n - 9)];
        int64_t ms =
            (int64_t)(((uint64_t)rand() << 31 | (uint64_t)rand()) % UINT64_C(253402300800000));
        if (i == 0) ms = 0;
        if (i == 1) ms = INT64_C(253402300799999);
        bool read = i % 7 == 3;
        chatd_msg_fields f = {.size = sizeof(f),
                              .kind = read ? CHATD_MSG_READ : CHATD_MSG_CHAT,
                              .id = i == 2 ? UINT64_MAX : (uint64_t)rand() + 1,
                              .room_id = i % 2 ? "3&4" : "1&9223372036854775807",
                              .writer_id = i % 2 ? 3 : INT64_MAX,
                              .writer = i % 3 ? "alice" : "b\"o\\b",
                              .text = i == 3 ? text : t,
                              .text_len = i == 3 ? n : tn,
                              .up_to = read ? (uint64_t)rand() + 1 : 0,
                              .time_ms = ms,
                              .idem_key = i % 5 == 1 ? "k\"e\\y" : NULL};
        chatd_msg *m;
        assert_int_equal(msg_create(&f, &m), CHATD_OK);
        size_t len;
        const char *json = msg_json(m, &len);
        char *want = jsonc_form(m);
        assert_string_equal(json, want);
        assert_int_equal(len, strlen(want));
        free(want);
        msg_unref(m);
    }
}

static void json_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "[]",
        "{\"type\":\"chat\"}",
        "{\"type\":\"chat\",\"id\":123,\"roomId\":\"3&4\",\"writer\":\"a\",\"writerId\":3,"
        "\"message\":\"x\",\"timestamp\":\"2026-01-01T00:00:00.000Z\"}", /* numeric id */
        "{\"type\":\"chat\",\"id\":\"1\",\"roomId\":\"3-4\",\"writer\":\"a\",\"writerId\":3,"
        "\"message\":\"x\",\"timestamp\":\"2026-01-01T00:00:00.000Z\"}", /* bad room */
        "{\"type\":\"chat\",\"id\":\"1\",\"roomId\":\"3&4\",\"writer\":\"a\",\"writerId\":3,"
        "\"message\":\"x\",\"timestamp\":\"yesterday\"}",
        "{\"type\":\"chat\",\"id\":\"1\",\"roomId\":\"3&4\",\"writer\":\"a\",\"writerId\":3,"
        "\"message\":\"a\\u0000b\",\"timestamp\":\"2026-01-01T00:00:00Z\"}", /* NUL */
        "{\"type\":\"chat\",\"id\":\"1\",\"roomId\":\"3&4\",\"writer\":\"a\",\"writerId\":3,"
        "\"message\":\"x\",\"timestamp\":\"2026-01-01T00:00:00Z\"} trailing",
        "{\"type\":\"poke\",\"id\":\"1\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        chatd_msg *m = NULL;
        if (msg_parse_json(bad[i], strlen(bad[i]), &m) != CHATD_ERR_INVALID)
            fail_msg("case %zu accepted: %s", i, bad[i]);
        assert_null(m);
    }
}

static void sink(void *arg, const char *data, size_t len)
{
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0;
    *buf = realloc(*buf, old + len + 1);
    assert_non_null(*buf);
    memcpy(*buf + old, data, len);
    (*buf)[old + len] = '\0';
}

static void metrics_text(void **state)
{
    (void)state;
    metrics *m = metrics_new();
    assert_int_equal(metrics_counter_add(m, "chatd_x_total", "ws", 2), 0);
    assert_int_equal(metrics_counter_add(m, "chatd_x_total", "ws", 3), 0);
    assert_int_equal(metrics_counter_add(m, "chatd_x_total", "ws2", 1), 0);
    assert_int_equal(metrics_gauge_set(m, "chatd_conns", "ws", 7), 0);
    assert_int_equal(metrics_counter_add(m, "bad name", "ws", 1), -1);
    assert_int_equal(metrics_gauge_set(m, "chatd_x_total", "ws", 1), -1); /* type clash */
    metrics_observe(m, METRIC_HIST_STORE, 3.0);
    char *out = NULL;
    metrics_render(m, sink, &out);
    assert_non_null(strstr(out, "# TYPE chatd_x_total counter\nchatd_x_total{instance=\"ws\"} 5\n"
                                "chatd_x_total{instance=\"ws2\"} 1\n"));
    assert_non_null(strstr(out, "chatd_conns{instance=\"ws\"} 7\n"));
    assert_non_null(strstr(out, "chatd_store_latency_ms_bucket{le=\"5\"} 1\n"));
    assert_non_null(strstr(out, "chatd_store_latency_ms_bucket{le=\"2.5\"} 0\n"));
    assert_non_null(strstr(out, "chatd_store_latency_ms_count 1\n"));
    free(out);
    metrics_free(m);
}

/* The lookup cache: one buffer reused with other contents (the same
 * pointers) names other series, and series inserted before a cached one
 * (moving it) leave every count where it belongs. */
static void metrics_cache(void **state)
{
    (void)state;
    metrics *m = metrics_new();
    char inst[16], name[32];
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 40; i++) {
            snprintf(inst, sizeof(inst), "i%02d", 39 - i); /* each inserted first */
            assert_int_equal(metrics_counter_add(m, "chatd_c_total", inst, (uint64_t)i + 1), 0);
            assert_int_equal(metrics_counter_add(m, "chatd_c_total", "fixed", 1), 0);
        }
    snprintf(name, sizeof(name), "chatd_c_total");
    assert_int_equal(metrics_gauge_set(m, name, "fixed", 1), -1); /* a counter, cached */
    snprintf(name, sizeof(name), "bad name");
    assert_int_equal(metrics_counter_add(m, name, "fixed", 1), -1); /* same pointer, refused */
    char *out = NULL;
    metrics_render(m, sink, &out);
    assert_non_null(strstr(out, "chatd_c_total{instance=\"fixed\"} 120\n"));
    for (int i = 0; i < 40; i++) {
        char want[64];
        snprintf(want, sizeof(want), "chatd_c_total{instance=\"i%02d\"} %d\n", 39 - i, 3 * (i + 1));
        assert_non_null(strstr(out, want));
    }
    free(out);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(id_layout),
        cmocka_unit_test(id_parse),
        cmocka_unit_test(utf8),
        cmocka_unit_test(rooms),
        cmocka_unit_test(json_round_trip),
        cmocka_unit_test(json_as_jsonc),
        cmocka_unit_test(json_refused),
        cmocka_unit_test(metrics_text),
        cmocka_unit_test(metrics_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
