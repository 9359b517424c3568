/*
 * svg.c: draws a plan as a standalone SVG document (no scripts, no external
 * resources): memory (weights + KV) against context length for a few batch
 * sizes, with the device memory, the usable memory (device minus reserve) and
 * the weights as horizontal lines, a dot where each batch reaches its
 * longest context, and a stacked bar of weights, KV, reserve and free memory.
 * Contexts beyond the model's own context length are shaded. The layout:
 *
 *   title, capacity
 *   +---------------- plot ----------------+   memory use
 *   |            |///// beyond the model's |    +------+
 *   | curves     |///// context (shaded)   |    | bar  |
 *   +--------------------------------------+    +------+
 *                 context length
 *   +-------------------- legend ----------------------+
 *   | batch 1: ...             batch 4: ...            |
 *   +--------------------------------------------------+
 *
 * Invariants: every number in a label is formatted by kvl_plan_fmt_int /
 * kvl_plan_fmt_gib, and every quantity comes from kvl_plan_* functions, so
 * the picture says exactly what the text table says. All text that comes
 * from outside (the title, which may hold a GGUF's general.name) is XML
 * escaped. Coordinates are finite: the scales never divide by zero.
 *
 * Must not: compute capacity itself, allocate, or write anything but f.
 */
#include "plan/planner.h"

#include <math.h>

#define W 1000
#define PX0 90.0 /* plot area */
#define PX1 700.0
#define PY0 80.0
#define PY1 610.0
#define BAR_X 770.0
#define BAR_W 60.0
/* The legend sits in a box below the x axis's title, two entries a row, so
 * no line of the chart (curves, limits, the bar) can run through it; the
 * picture grows downwards with the number of rows. */
#define LEG_Y0 (PY1 + 58.0)
#define LEG_X0 PX0
#define LEG_X1 (BAR_X + BAR_W + 100.0)
#define LEG_ROW 20.0

static const char *k_colors[KVL_PLAN_SVG_MAX_BATCH] = {"#1f77b4", "#2ca02c", "#9467bd", "#8c564b",
                                                       "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

static void xml_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            fputc((unsigned char)*s < 0x20 ? '?' : *s, f);
        }
    }
}

static void text(FILE *f, double x, double y, const char *anchor, int size, const char *fill,
                 const char *s) {
    /* a white halo keeps labels readable where lines cross them */
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\" fill=\"%s\" "
            "stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">",
            x, y, anchor, size, fill);
    xml_text(f, s);
    fputs("</text>\n", f);
}

/* A 1-2-5 step giving about `want` intervals over [0, max]. */
static double nice_step(double max, int want) {
    double raw = max / want, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* A power of two giving 4..8 intervals over [1, max]. */
static size_t pow2_step(size_t max) {
    size_t s = 1;
    while (max / s > 8)
        s *= 2;
    return s;
}

typedef struct {
    double gib_max;
    size_t ctx_max;
} scale;

static double sx(const scale *sc, double tokens) {
    return PX0 + (PX1 - PX0) * tokens / (double)sc->ctx_max;
}
static double sy(const scale *sc, double bytes) {
    double g = bytes / 1073741824.0;
    if (g > sc->gib_max)
        g = sc->gib_max;
    return PY1 - (PY1 - PY0) * g / sc->gib_max;
}

static void hline(FILE *f, const scale *sc, size_t bytes, const char *color, const char *dash,
                  const char *what, double x_end, double dy) {
    char g[32], lab[96];
    double y = sy(sc, (double)bytes);
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\"%s/>\n",
            PX0, y, x_end, y, color, dash);
    snprintf(lab, sizeof lab, "%s %s", what, kvl_plan_fmt_gib(bytes, g, sizeof g));
    text(f, PX1 - 4, y + dy, "end", 12, color, lab);
}

/* Contexts beyond the model's, shaded under the grid. */
static void draw_over_context(FILE *f, const scale *sc, size_t ctx_len) {
    char a[48], lab[128];
    if (ctx_len >= sc->ctx_max)
        return;
    double xc = sx(sc, (double)ctx_len);
    fprintf(f,
            "<rect id=\"over-context\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
            "height=\"%.1f\" fill=\"#ececec\"/>\n"
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" "
            "stroke-width=\"1\" stroke-dasharray=\"3 3\"/>\n",
            xc, PY0, PX1 - xc, PY1 - PY0, xc, PY0, xc, PY1);
    snprintf(lab, sizeof lab, "shaded: beyond the model's context of %s tokens",
             kvl_plan_fmt_int(ctx_len, a, sizeof a));
    text(f, PX1, PY0 - 6, "end", 12, "#666", lab);
}

/* Axes, grid, ticks and axis titles. */
static void draw_axes(FILE *f, const scale *sc, double ystep) {
    char lab[64];
    fprintf(f, "<g stroke=\"#ddd\" stroke-width=\"1\">\n");
    for (double g = ystep; g <= sc->gib_max + 1e-9; g += ystep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", PX0,
                sy(sc, g * 1073741824.0), PX1, sy(sc, g * 1073741824.0));
    size_t xstep = pow2_step(sc->ctx_max);
    for (size_t x = xstep; x <= sc->ctx_max; x += xstep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", sx(sc, (double)x),
                PY0, sx(sc, (double)x), PY1);
    fprintf(f,
            "</g>\n<g stroke=\"black\" stroke-width=\"1.5\">\n"
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n"
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n</g>\n",
            PX0, PY1, PX1, PY1, PX0, PY0, PX0, PY1);
    for (double g = 0; g <= sc->gib_max + 1e-9; g += ystep) {
        snprintf(lab, sizeof lab, "%g", g);
        text(f, PX0 - 8, sy(sc, g * 1073741824.0) + 4, "end", 12, "black", lab);
    }
    for (size_t x = 0; x <= sc->ctx_max; x += xstep) {
        if (x >= 1024 && x % 1024 == 0)
            snprintf(lab, sizeof lab, "%zuK", x / 1024);
        else
            snprintf(lab, sizeof lab, "%zu", x);
        text(f, sx(sc, (double)x), PY1 + 18, "middle", 12, "black", lab);
    }
    text(f, (PX0 + PX1) / 2, PY1 + 42, "middle", 14, "black",
         "context length per sequence (tokens)");
    fprintf(f,
            "<text x=\"24\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" "
            "transform=\"rotate(-90 24 %.1f)\">memory: weights + KV (GiB)</text>\n",
            (PY0 + PY1) / 2, (PY0 + PY1) / 2);
}

/* One line per batch size: weights + b * ceil(C / B) * block_bytes, and a
 * dot where it reaches its longest context. */
static void draw_curves(FILE *f, const scale *sc, const kvl_plan_svg *s) {
    const kvl_plan_request *r = s->req;
    const kvl_plan_result *res = s->res;
    double per_tok = (double)res->cap.block_bytes / r->block_size;
    for (int i = 0; i < s->n_batch; i++) {
        size_t bs = s->batch[i];
        const char *col = k_colors[i];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        const int n_pts = 240;
        for (int p = 0; p <= n_pts; p++) {
            size_t c = (size_t)((double)sc->ctx_max * p / n_pts);
            double bytes = (double)r->weight_bytes +
                           (double)bs * (double)kvl_plan_blocks_for_tokens(c, r->block_size) *
                               (double)res->cap.block_bytes;
            if (bytes / 1073741824.0 > sc->gib_max) {
                /* stop where the line leaves the chart */
                double cc =
                    (sc->gib_max * 1073741824.0 - (double)r->weight_bytes) / ((double)bs * per_tok);
                if (cc > 0)
                    fprintf(f, "%.1f,%.1f", sx(sc, cc), PY0);
                break;
            }
            fprintf(f, "%.1f,%.1f ", sx(sc, (double)c), sy(sc, bytes));
        }
        fputs("\"/>\n", f);
        size_t mc = res->weights_fit ? kvl_plan_max_context(&res->cap, bs) : 0;
        if (mc > 0 && mc <= sc->ctx_max) {
            double yb = (double)r->weight_bytes +
                        (double)bs * (double)(mc / r->block_size) * (double)res->cap.block_bytes;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>\n",
                    sx(sc, (double)mc), sy(sc, yb), col);
        }
    }
}

/* The legend, in its own box below the chart (LEG_*). */
static void draw_legend(FILE *f, const kvl_plan_svg *s, double leg_h, size_t ctx_len) {
    const kvl_plan_result *res = s->res;
    char a[48], lab[128];
    fprintf(f,
            "<g id=\"legend\">\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
            "fill=\"white\" stroke=\"#999\" stroke-width=\"1\"/>\n",
            LEG_X0, LEG_Y0, LEG_X1 - LEG_X0, leg_h);
    for (int i = 0; i < s->n_batch; i++) {
        size_t mc = res->weights_fit ? kvl_plan_max_context(&res->cap, s->batch[i]) : 0;
        double lx = LEG_X0 + 12 + (i % 2) * (LEG_X1 - LEG_X0) / 2;
        double ly = LEG_Y0 + 6 + LEG_ROW * (i / 2) + 14;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"3\"/>\n",
                lx, ly - 4, lx + 24, ly - 4, k_colors[i]);
        snprintf(lab, sizeof lab, "batch %zu: longest context %s tokens%s", s->batch[i],
                 kvl_plan_fmt_int(mc, a, sizeof a), mc > ctx_len ? " (over the model's)" : "");
        text(f, lx + 30, ly, "start", 12, "black", lab);
    }
    fputs("</g>\n", f);
}

/* The stacked bar (weights, KV, reserve, free, bottom to top) and the
 * device memory line across chart and bar. */
static void draw_bar(FILE *f, const scale *sc, const kvl_plan_svg *s, size_t bar_total) {
    const kvl_plan_request *r = s->req;
    const kvl_plan_result *res = s->res;
    char a[48], lab[128];
    struct {
        const char *what, *color;
        size_t bytes;
    } seg[4] = {{"weights", "#555", r->weight_bytes},
                {s->kv_bar_label ? s->kv_bar_label : "KV", "#1f77b4", s->kv_bar},
                {"reserve", "#ff7f0e", res->reserve_total},
                {"free", "#ffffff", 0}};
    /* free space under half a percent of the device is left out of the bar */
    if (bar_total < res->mem_total && res->mem_total - bar_total >= res->mem_total / 200)
        seg[3].bytes = res->mem_total - bar_total;
    text(f, BAR_X + BAR_W / 2, PY0 - 22, "middle", 13, "black", "memory use");
    double base = 0, last_ly = 1e9;
    for (int i = 0; i < 4; i++) {
        if (seg[i].bytes == 0 && i == 3)
            continue;
        double y0 = sy(sc, base), y1 = sy(sc, base + (double)seg[i].bytes);
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                "stroke=\"black\" stroke-width=\"1\"/>\n",
                BAR_X, y1, BAR_W, y0 - y1, seg[i].color);
        double ly = (y0 + y1) / 2 + 4;
        if (ly > last_ly - 28) /* keep labels of thin segments apart */
            ly = last_ly - 28;
        last_ly = ly;
        text(f, BAR_X + BAR_W + 6, ly - 7, "start", 12, "black", seg[i].what);
        text(f, BAR_X + BAR_W + 6, ly + 7, "start", 12, "black",
             kvl_plan_fmt_gib(seg[i].bytes, a, sizeof a));
        base += (double)seg[i].bytes;
    }
    hline(f, sc, res->mem_total, "#d62728", "", "device memory", BAR_X + BAR_W + 8, -5);
    if (bar_total > res->mem_total) {
        snprintf(lab, sizeof lab, "over by %s",
                 kvl_plan_fmt_gib(bar_total - res->mem_total, a, sizeof a));
        text(f, BAR_X + BAR_W / 2, PY1 + 18, "middle", 12, "#d62728", lab);
    }
}

kvl_status kvl_plan_svg_write(FILE *f, const kvl_plan_svg *s, kvl_error *err) {
    const kvl_plan_request *r = s->req;
    const kvl_plan_result *res = s->res;
    if (!f || !r || !res || s->n_batch < 0 || s->n_batch > KVL_PLAN_SVG_MAX_BATCH ||
        r->block_size < 1 || res->cap.block_bytes == 0)
        return kvl_errorf(err, KVL_E_INVALID, "plan: svg: incomplete input (n_batch %d, max %d)",
                          s->n_batch, KVL_PLAN_SVG_MAX_BATCH);
    char a[48], b[48], cb[48], lab[256];
    scale sc;
    sc.ctx_max = s->ctx_max ? s->ctx_max : 1;
    size_t top = res->mem_total;
    size_t bar_total = r->weight_bytes + s->kv_bar + res->reserve_total;
    if (r->weight_bytes > top)
        top = r->weight_bytes;
    if (bar_total > top && bar_total / 2 < res->mem_total)
        top = bar_total; /* show an overflowing bar, unless it dwarfs the device */
    double gtop = (double)top / 1073741824.0 * 1.08;
    double ystep = nice_step(gtop > 0 ? gtop : 1, 6);
    sc.gib_max = ceil(gtop / ystep) * ystep;
    if (!(sc.gib_max > 0))
        sc.gib_max = 1;

    int leg_rows = (s->n_batch + 1) / 2;
    double leg_h = 12.0 + LEG_ROW * leg_rows;
    int H = (int)(LEG_Y0 + leg_h + 12.0);
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
            "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            W, H, W, H, W, H);
    text(f, W / 2.0, 28, "middle", 18, "black", s->title ? s->title : "kvllm plan");
    snprintf(lab, sizeof lab, "KV capacity %s tokens (%s blocks of %d), %s B per block",
             kvl_plan_fmt_int(res->cap.n_tokens, a, sizeof a),
             kvl_plan_fmt_int(res->cap.n_blocks, b, sizeof b), r->block_size,
             kvl_plan_fmt_int(res->cap.block_bytes, cb, sizeof cb));
    text(f, W / 2.0, 52, "middle", 14, "#333", lab);

    size_t ctx_len = (size_t)r->shape.hp.ctx_len;
    draw_over_context(f, &sc, ctx_len);
    draw_axes(f, &sc, ystep);
    draw_curves(f, &sc, s);
    draw_legend(f, s, leg_h, ctx_len);
    /* horizontal limits, drawn over the curves so their labels stay readable */
    hline(f, &sc, r->weight_bytes, "#555", "", "weights", PX1, 15);
    hline(f, &sc, res->usable, "#ff7f0e", " stroke-dasharray=\"6 4\"", "usable (minus reserve)",
          PX1, -5);
    draw_bar(f, &sc, s, bar_total);
    fputs("</svg>\n", f);
    if (ferror(f))
        return kvl_errorf(err, KVL_E_IO, "plan: svg: write failed");
    return KVL_OK;
}
