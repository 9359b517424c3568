/*
 * The catalogue: named model shapes and devices, with where each number
 * comes from. One table of each, used by the planner (`kvllm plan --model`,
 * `--device`), by mkmodel's presets (`kvllm mkmodel --preset`, resolved here
 * into a kvl_mkmodel_spec) and by the simulator's cost model (bandwidth and
 * FLOP/s).
 *
 *     const kvl_model_shape *s = kvl_catalog_shape_find("llama-3-8b");
 *     const kvl_catalog_device *d = kvl_catalog_device_find("H100 80GB");
 *     // s->hp.n_kv_heads == 8; d->bytes == 81559 MiB
 *
 * Why here: a shape's struct (kvl_model_shape) is a model fact and lives in
 * model/; the names are catalogue data the planner, the CLI and the
 * simulator share, and plan/ sits above model/, so mkmodel (model/) takes a
 * spec and never sees a name (docs/planner.md).
 */
#ifndef KVL_CATALOG_H
#define KVL_CATALOG_H

#include "model/mkmodel.h"
#include "model/model.h"

/* ---- shapes ------------------------------------------------------------ */

/* The named shapes (static, in the order --list-models prints them). */
const kvl_model_shape *kvl_catalog_shapes(size_t *n);
/* Case-insensitive lookup by name; NULL when unknown. */
const kvl_model_shape *kvl_catalog_shape_find(const char *name);

/* ---- devices ----------------------------------------------------------- */

typedef struct kvl_catalog_device {
    const char *name;        /* "H100-80GB" */
    const char *alias;       /* another accepted name ("H100-SXM-80GB"), or NULL */
    size_t bytes;            /* memory.total as nvidia-smi reports it, MiB * 2^20 */
    double bandwidth;        /* memory bandwidth, bytes/s (datasheet, decimal) */
    double flops_bf16;       /* dense bf16 tensor FLOP/s (datasheet; without sparsity) */
    const char *source;      /* where bytes comes from */
    const char *spec_source; /* where bandwidth and FLOP/s come from */
} kvl_catalog_device;

const kvl_catalog_device *kvl_catalog_devices(size_t *n);
/* By name or alias, ignoring case and any '-', ' ' or '_' ("h100 sxm 80gb",
 * "H100_80GB"); NULL when unknown. */
const kvl_catalog_device *kvl_catalog_device_find(const char *name);

/* ---- mkmodel presets --------------------------------------------------- */

/* Fill *out with the catalogue shape `name` as an mkmodel spec: its
 * dimensions, rope base and epsilon; general.name = `name` as given; F16
 * weights, seed 0, untied output, default alignment. KVL_E_INVALID when the
 * name is unknown or the shape is one mkmodel cannot write (not llama, or
 * with q/k/v biases), naming it and the presets there are. *out is written
 * only on success. */
kvl_status kvl_catalog_mkmodel_spec(const char *name, kvl_mkmodel_spec *out, kvl_error *err);
/* The shapes mkmodel can write, comma-separated, into buf (NUL-terminated,
 * cut at n - 1 bytes); returns buf. */
const char *kvl_catalog_mkmodel_names(char *buf, size_t n);

#endif
