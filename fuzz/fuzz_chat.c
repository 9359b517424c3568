/*
 * fuzz_chat: libFuzzer target for the chat templates (src/chat/).
 *
 * Input: byte 0 picks the template (mod 9, 0 is "none"), byte 1 bit 0 the
 * generation prompt; the rest is split at NUL bytes into messages, each
 * one's first byte picking its role (system, user, assistant, developer or
 * an unknown one) and the rest its content. The whole input is also given
 * to kvl_chat_template_detect.
 *
 * Invariants checked (a violation calls __builtin_trap()):
 *   - the length query and the rendering agree, and the text ends in a NUL;
 *   - a buffer one byte short is refused with KVL_E_LIMIT and left untouched;
 *   - a refusal other than the length query leaves *len_out untouched;
 *   - chatml, llama3 and zephyr: the conversation without its last message
 *     and without the generation prompt renders to a prefix of the whole
 *     (what kvllm chat's reuse of a turn's tokens relies on).
 */
#include "kvllm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(c)                                                                              \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_MSGS 64

/* The rendering (malloc'd) or NULL when refused; checks the contracts. */
static char *render(const kvl_chat_params *p, const kvl_chat_message *m, size_t n, size_t *len) {
    size_t need = SIZE_MAX;
    kvl_status st = kvl_chat_apply(p, m, n, NULL, 0, &need, NULL);
    if (st != KVL_E_LIMIT || need == SIZE_MAX) {
        FUZZ_CHECK(need == SIZE_MAX);
        return NULL;
    }
    char *buf = malloc(need + 1);
    if (!buf)
        return NULL;
    if (need > 0) {
        memset(buf, 0x5a, need + 1);
        FUZZ_CHECK(kvl_chat_apply(p, m, n, buf, need - 1, len, NULL) == KVL_E_LIMIT);
        for (size_t i = 0; i < need + 1; i++)
            FUZZ_CHECK(buf[i] == 0x5a);
    }
    FUZZ_CHECK(kvl_chat_apply(p, m, n, buf, need + 1, len, NULL) == KVL_OK);
    FUZZ_CHECK(*len == need && buf[need] == '\0');
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvl_chat_template_detect((const char *)data, size);
    if (size < 2)
        return 0;
    static const char *const roles[] = {"system", "user", "assistant", "developer", "tool"};
    kvl_chat_params p = kvl_chat_defaults((kvl_chat_template)(data[0] % 9));
    p.add_generation_prompt = data[1] & 1;
    char *copy = malloc(size - 1); /* the messages' bytes, NUL-split */
    if (!copy)
        return 0;
    memcpy(copy, data + 2, size - 2);
    copy[size - 2] = '\0';
    kvl_chat_message m[MAX_MSGS];
    size_t n = 0;
    for (char *s = copy; n < MAX_MSGS && s < copy + size - 1; s += strlen(s) + 1) {
        m[n].role = *s ? roles[(unsigned char)*s % 5] : "user";
        m[n].content = *s ? s + 1 : s;
        n++;
    }
    size_t len = 0, len_prefix = 0;
    char *whole = render(&p, m, n, &len);
    kvl_chat_template t = p.tmpl;
    if (whole && n > 1 && p.add_generation_prompt &&
        (t == KVL_CHAT_CHATML || t == KVL_CHAT_LLAMA3 || t == KVL_CHAT_ZEPHYR)) {
        kvl_chat_params q = p;
        q.add_generation_prompt = false;
        char *prefix = render(&q, m, n - 1, &len_prefix);
        FUZZ_CHECK(prefix && len_prefix <= len && !memcmp(prefix, whole, len_prefix));
        free(prefix);
    }
    free(whole);
    free(copy);
    return 0;
}
