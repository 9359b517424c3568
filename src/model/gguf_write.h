/*
 * GGUF v3 writer (the random-weight model generator built on it is in
 * mkmodel.h).
 *
 * Writer: collect metadata and tensor infos in memory, then stream the
 * tensor data. Nothing but the header is held in memory, so a multi-GB
 * model is written row by row:
 *
 *     kvl_gguf_writer *w = NULL;
 *     kvl_gguf_writer_init(&w, &err);
 *     kvl_gguf_writer_add_str(w, "general.architecture", "llama", &err);
 *     kvl_gguf_writer_add_u32(w, "llama.block_count", 5, &err);
 *     int64_t ne[2] = {64, 512};                    // ne[0] fastest
 *     kvl_gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, KVL_TYPE_F16, &err);
 *     if (kvl_gguf_writer_begin(w, "out.gguf", &err) != KVL_OK) ...
 *     for each tensor in the order added, for each row:
 *         kvl_gguf_writer_write(w, row_bytes, n_row_bytes, &err);
 *     kvl_gguf_writer_finish(w, &err);   // checks every byte arrived
 *     kvl_gguf_writer_free(w);
 *
 * Errors are sticky: after the first failed call every later call returns
 * the same status and message, so a run of add_* calls can be checked once
 * (at begin). The file is written to a new temporary file beside path,
 * "<dir>/.<name>.tmp-XXXXXX" (random, created exclusively: O_CREAT|O_EXCL|
 * O_NOFOLLOW, so nothing planted at that name is followed or overwritten),
 * and renamed to path by finish; on any failure, or when the writer is freed
 * before finish, the temporary file is removed and path is left as it was.
 * A path that exists and is not a regular file (a device, a directory, a
 * FIFO, a symbolic link) is refused (KVL_E_INVALID), never replaced.
 *
 * File layout written (all little-endian):
 *
 *   "GGUF" u32 version=3 | u64 n_tensors | u64 n_kv
 *   n_kv x  [str key][u32 vtype][value]          str = u64 len + bytes
 *   n_tensors x [str name][u32 n_dims][u64 ne[n_dims]][u32 type][u64 offset]
 *   zero padding to `alignment`                  <- data section starts here
 *   tensor 0 bytes | pad | tensor 1 bytes | pad | ... | last tensor | pad
 *
 * offset is relative to the data section and a multiple of the alignment.
 */
#ifndef KVL_GGUF_WRITE_H
#define KVL_GGUF_WRITE_H

#include "model/gguf.h"

typedef struct kvl_gguf_writer kvl_gguf_writer;

kvl_status kvl_gguf_writer_init(kvl_gguf_writer **out, kvl_error *err);
/* Removes the temporary file unless finish succeeded. NULL does nothing. */
void kvl_gguf_writer_free(kvl_gguf_writer *w);

/* Data alignment (power of two, 1..KVL_GGUF_MAX_ALIGNMENT; default 32).
 * Written as general.alignment (UINT32). Only before the first tensor. */
kvl_status kvl_gguf_writer_set_alignment(kvl_gguf_writer *w, size_t alignment, kvl_error *err);

/* Metadata. Keys must be non-empty and unique ("general.alignment" is
 * reserved: use set_alignment). Strings are (ptr, len) where a len argument
 * exists and NUL-terminated otherwise. */
kvl_status kvl_gguf_writer_add_u8(kvl_gguf_writer *w, const char *key, uint8_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i8(kvl_gguf_writer *w, const char *key, int8_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_u16(kvl_gguf_writer *w, const char *key, uint16_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i16(kvl_gguf_writer *w, const char *key, int16_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_u32(kvl_gguf_writer *w, const char *key, uint32_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i32(kvl_gguf_writer *w, const char *key, int32_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_u64(kvl_gguf_writer *w, const char *key, uint64_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i64(kvl_gguf_writer *w, const char *key, int64_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_f32(kvl_gguf_writer *w, const char *key, float v, kvl_error *err);
kvl_status kvl_gguf_writer_add_f64(kvl_gguf_writer *w, const char *key, double v, kvl_error *err);
kvl_status kvl_gguf_writer_add_bool(kvl_gguf_writer *w, const char *key, bool v, kvl_error *err);
kvl_status kvl_gguf_writer_add_str(kvl_gguf_writer *w, const char *key, const char *v,
                                   kvl_error *err);
kvl_status kvl_gguf_writer_add_strn(kvl_gguf_writer *w, const char *key, const char *v, size_t len,
                                    kvl_error *err);
/* Array of n numbers of element type elem (any scalar vtype but STRING and
 * ARRAY; BOOL elements are one byte each), packed in host order, which must
 * be little-endian. */
kvl_status kvl_gguf_writer_add_arr(kvl_gguf_writer *w, const char *key, kvl_gguf_vtype elem,
                                   const void *data, uint64_t n, kvl_error *err);
/* Array of n strings; lens may be NULL (strs are then NUL-terminated). */
kvl_status kvl_gguf_writer_add_arr_str(kvl_gguf_writer *w, const char *key, const char *const *strs,
                                       const size_t *lens, uint64_t n, kvl_error *err);

/* Tensor info: n_dims 1..4, every ne >= 1, ne[0] a multiple of the type's
 * block size, names non-empty (< 64 bytes, as ggml requires) and unique.
 * The data must later arrive in the order the tensors were added. */
kvl_status kvl_gguf_writer_add_tensor(kvl_gguf_writer *w, const char *name, uint32_t n_dims,
                                      const int64_t *ne, kvl_type type, kvl_error *err);

/* Bytes the finished file will have (header, padding, data). Valid once
 * every tensor has been added; 0 after an error. */
uint64_t kvl_gguf_writer_file_size(const kvl_gguf_writer *w);
/* Bytes of the data section (tensors and their padding). */
uint64_t kvl_gguf_writer_data_size(const kvl_gguf_writer *w);

/* Create the temporary file and write the header and tensor infos. */
kvl_status kvl_gguf_writer_begin(kvl_gguf_writer *w, const char *path, kvl_error *err);
/* Append n bytes of tensor data. Chunks may span tensors; padding between
 * tensors is inserted automatically. More bytes than declared is an error. */
kvl_status kvl_gguf_writer_write(kvl_gguf_writer *w, const void *data, size_t n, kvl_error *err);
/* Bytes of tensor data (padding included) written so far. */
uint64_t kvl_gguf_writer_bytes_written(const kvl_gguf_writer *w);
/* Check every declared byte arrived, flush, close, rename into place. */
kvl_status kvl_gguf_writer_finish(kvl_gguf_writer *w, kvl_error *err);

#endif
