/*
 * Chat templates and a loaded model: which template its file declares
 * (tokenizer.chat_template, searched for markers, never run), the BOS/EOS
 * texts of its vocabulary, and tokenizing rendered chat text with the
 * control tokens it spells parsed into their ids. Read-only on the model.
 */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

/* The text of token id into dst (NUL-terminated); false when there is none
 * or it does not fit. */
static bool token_text(const kvl_model *m, int32_t id, char *dst, size_t cap) {
    const char *piece;
    size_t len;
    if (id < 0 || kvl_tokenizer_get(m->tok, id, &piece, &len, NULL, NULL) || len == 0 ||
        len >= cap || memchr(piece, 0, len))
        return false;
    memcpy(dst, piece, len);
    dst[len] = '\0';
    return true;
}

kvl_status kvl_chat_params_for_model(const kvl_model *m, const char *name, kvl_chat_params *out,
                                     kvl_error *err) {
    kvl_chat_template t = KVL_CHAT_NONE;
    if (name) {
        kvl_error e;
        kvl_status st = kvl_chat_template_parse(name, &t, &e);
        if (st)
            return kvl_errorf(err, st, "--chat-template: %s", e.msg);
    } else {
        const kvl_gguf_kv *kv =
            m->gguf ? kvl_gguf_find_key(m->gguf, "tokenizer.chat_template") : NULL;
        if (!kv || kv->type != KVL_GGUF_STRING || kv->v.str.len == 0)
            return kvl_errorf(err, KVL_E_NOT_FOUND,
                              "the model file has no chat template (tokenizer.chat_template); "
                              "choose one with --chat-template NAME (llama2, llama3, chatml, "
                              "mistral, zephyr, phi3, gemma, plain)");
        t = kvl_chat_template_detect(kv->v.str.ptr, (size_t)kv->v.str.len);
        if (t == KVL_CHAT_NONE)
            return kvl_errorf(err, KVL_E_UNSUPPORTED,
                              "the model file's chat template (tokenizer.chat_template, %llu "
                              "bytes) is not one kvllm recognises; choose one with "
                              "--chat-template NAME (llama2, llama3, chatml, mistral, zephyr, "
                              "phi3, gemma, plain)",
                              (unsigned long long)kv->v.str.len);
    }
    kvl_chat_params p = kvl_chat_defaults(t);
    /* the model's own BOS/EOS texts, as Jinja's bos_token / eos_token would
     * be; ChatML writes no BOS */
    if (t != KVL_CHAT_CHATML)
        token_text(m, kvl_tokenizer_bos(m->tok), p.bos_token, sizeof p.bos_token);
    token_text(m, kvl_tokenizer_eos(m->tok), p.eos_token, sizeof p.eos_token);
    *out = p;
    return KVL_OK;
}

kvl_status kvl_chat_tokenize(const kvl_model *m, const char *text, size_t len, int32_t *out,
                             size_t cap, size_t *n_out, kvl_error *err) {
    if (!text && len)
        return kvl_errorf(err, KVL_E_INVALID, "chat tokenize: text is NULL with len %zu", len);
    return kvl_tokenizer_tokenize(m->tok, text ? text : "", len, KVL_TOKENIZE_PARSE_SPECIAL, out,
                                  cap, n_out, err);
}
