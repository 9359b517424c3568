/*
 * mkmodel's vocabulary taken from another GGUF (`kvllm mkmodel --vocab
 * FILE.gguf`): every tokenizer.* key of the source file is copied as it is
 * (model, pre, tokens, types, merges, special ids, flags, chat template), so
 * a random-weight model gets a real tokenizer of any kind kvllm reads
 * (byte-level BPE from Llama 3 or Qwen files, SentencePiece), including
 * llama.cpp's vocabulary-only ggml-vocab-*.gguf files.
 *
 * Invariants: the source loads as a kvllm tokenizer before it is used (a
 * file kvllm could not tokenize with is refused here, not in the model it
 * would produce); the copied keys point into the source mapping, which the
 * vocabulary owns until kvl_mkmodel_vocab_free.
 * Must not: copy keys outside tokenizer.*, or change a value.
 */
#include "model/mkmodel.h"

#include <stdio.h>
#include <stdlib.h>

kvl_status kvl_mkmodel_vocab_from_gguf(const char *path, kvl_mkmodel_vocab *out, kvl_error *err) {
    kvl_gguf *g = NULL;
    kvl_status st = kvl_gguf_open(path, &g, err);
    if (st != KVL_OK)
        return st;
    kvl_tokenizer *t = NULL;
    if ((st = kvl_tokenizer_from_gguf(g, &t, err)) != KVL_OK) {
        kvl_gguf_free(g);
        return st;
    }
    memset(out, 0, sizeof *out);
    out->n = kvl_tokenizer_n_vocab(t);
    out->src = g;
    kvl_tokenizer_free(t);
    return KVL_OK;
}

/* One scalar or string value under key. */
static kvl_status put_scalar(kvl_gguf_writer *w, const char *key, const kvl_gguf_kv *kv,
                             kvl_error *err) {
    switch (kv->type) {
    case KVL_GGUF_UINT8: return kvl_gguf_writer_add_u8(w, key, (uint8_t)kv->v.u64, err);
    case KVL_GGUF_INT8: return kvl_gguf_writer_add_i8(w, key, (int8_t)kv->v.i64, err);
    case KVL_GGUF_UINT16: return kvl_gguf_writer_add_u16(w, key, (uint16_t)kv->v.u64, err);
    case KVL_GGUF_INT16: return kvl_gguf_writer_add_i16(w, key, (int16_t)kv->v.i64, err);
    case KVL_GGUF_UINT32: return kvl_gguf_writer_add_u32(w, key, (uint32_t)kv->v.u64, err);
    case KVL_GGUF_INT32: return kvl_gguf_writer_add_i32(w, key, (int32_t)kv->v.i64, err);
    case KVL_GGUF_UINT64: return kvl_gguf_writer_add_u64(w, key, kv->v.u64, err);
    case KVL_GGUF_INT64: return kvl_gguf_writer_add_i64(w, key, kv->v.i64, err);
    case KVL_GGUF_FLOAT32: return kvl_gguf_writer_add_f32(w, key, (float)kv->v.f64, err);
    case KVL_GGUF_FLOAT64: return kvl_gguf_writer_add_f64(w, key, kv->v.f64, err);
    case KVL_GGUF_BOOL: return kvl_gguf_writer_add_bool(w, key, kv->v.u64 != 0, err);
    case KVL_GGUF_STRING:
        return kvl_gguf_writer_add_strn(w, key, kv->v.str.ptr, (size_t)kv->v.str.len, err);
    default:
        return kvl_errorf(err, KVL_E_FORMAT, "mkmodel --vocab: key '%s' has type %u", key,
                          (unsigned)kv->type);
    }
}

/* An array of strings under key (pointers into the source mapping). */
static kvl_status put_strs(kvl_gguf_writer *w, const char *key, const kvl_gguf_kv *kv,
                           kvl_error *err) {
    size_t n = (size_t)kv->v.arr.n;
    const char **strs = malloc((n ? n : 1) * sizeof *strs);
    size_t *lens = malloc((n ? n : 1) * sizeof *lens);
    kvl_status st;
    if (!strs || !lens) {
        st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel --vocab: '%s': no memory for %zu strings", key,
                        n);
    } else {
        for (size_t i = 0; i < n; i++) {
            strs[i] = kv->v.arr.strs[i].ptr ? kv->v.arr.strs[i].ptr : "";
            lens[i] = (size_t)kv->v.arr.strs[i].len;
        }
        st = kvl_gguf_writer_add_arr_str(w, key, strs, lens, n, err);
    }
    free(strs);
    free(lens);
    return st;
}

kvl_status kvl_mkmodel_vocab_write_keys(kvl_gguf_writer *w, const kvl_mkmodel_vocab *v,
                                        kvl_error *err) {
    static const char prefix[] = "tokenizer.";
    const kvl_gguf *g = v->src;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const kvl_gguf_kv *kv = &g->kv[i];
        char key[256];
        if (kv->key.len < sizeof prefix - 1 || memcmp(kv->key.ptr, prefix, sizeof prefix - 1))
            continue;
        if (kv->key.len >= sizeof key)
            return kvl_errorf(err, KVL_E_LIMIT, "mkmodel --vocab: a key of %llu bytes > %zu",
                              (unsigned long long)kv->key.len, sizeof key - 1);
        memcpy(key, kv->key.ptr, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        kvl_status st;
        if (kv->type != KVL_GGUF_ARRAY)
            st = put_scalar(w, key, kv, err);
        else if (kv->v.arr.type == KVL_GGUF_STRING)
            st = put_strs(w, key, kv, err);
        else
            st = kvl_gguf_writer_add_arr(w, key, (kvl_gguf_vtype)kv->v.arr.type, kv->v.arr.data,
                                         kv->v.arr.n, err);
        if (st != KVL_OK)
            return st;
    }
    return KVL_OK;
}
