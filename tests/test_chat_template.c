/*
 * Chat templates: each renders one fixed conversation (system, user,
 * assistant, user, with the generation prompt) exactly as the model's
 * published Jinja template (tokenizer_config.json's chat_template) renders
 * it; the expected strings below were worked out by reading those Jinja
 * texts, whose models are named at each one. Then: trimming where a
 * template trims, the order rules, the errors (naming the field), the
 * length query and a buffer too small (left untouched), detection on real
 * template texts, and a model file without a template.
 */
#include "kvllm.h"
#include "model/gguf_write.h"
#include "model/model.h"
#include "testutil.h"

#include <stdlib.h>

static const kvl_chat_message conv[4] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi! How can I help?"},
    {"user", "Tell me a joke."},
};

/* Render with tmpl's usual BOS/EOS texts and compare byte for byte. */
static void expect(kvl_chat_template t, const kvl_chat_message *m, size_t n, bool gen,
                   const char *want) {
    kvl_chat_params p = kvl_chat_defaults(t);
    p.add_generation_prompt = gen;
    char buf[2048];
    size_t len = 0;
    kvl_error err = {0};
    kvl_status st = kvl_chat_apply(&p, m, n, buf, sizeof buf, &len, &err);
    CHECK_EQ_INT(st, KVL_OK);
    CHECK_EQ_INT(len, strlen(want));
    bool same = st == KVL_OK && len == strlen(want) && !memcmp(buf, want, len);
    CHECK(same);
    if (!same)
        fprintf(stderr, "  %s: got   [%.*s]\n  want [%s]\n", kvl_chat_template_name(t),
                (int)(st == KVL_OK ? len : 0), buf, want);
}

static void fixed_conversation(void) {
    /* meta-llama/Llama-2-7b-chat-hf: the system block joins the first user
     * turn; bos_token + '[INST] ' + content.strip() + ' [/INST]', and
     * ' ' + content.strip() + ' ' + eos_token for the assistant */
    expect(KVL_CHAT_LLAMA2, conv, 4, true,
           "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi! How "
           "can I help? </s><s>[INST] Tell me a joke. [/INST]");
    /* meta-llama/Meta-Llama-3-8B-Instruct */
    expect(KVL_CHAT_LLAMA3, conv, 4, true,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
           "assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|"
           "start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_"
           "header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|><|start_header_id|>"
           "assistant<|end_header_id|>\n\n");
    /* Qwen/Qwen2-7B-Instruct (a system message given, so no default one) */
    expect(KVL_CHAT_CHATML, conv, 4, true,
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!"
           "<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\n"
           "Tell me a joke.<|im_end|>\n<|im_start|>assistant\n");
    /* mistralai/Mistral-7B-Instruct-v0.3: the system message goes into the
     * last user turn; "[INST] " + content + "[/INST]"; " " + trim + eos */
    expect(KVL_CHAT_MISTRAL, conv, 4, true,
           "<s>[INST] Hello![/INST] Hi! How can I help?</s>[INST] You are a helpful assistant.\n\n"
           "Tell me a joke.[/INST]");
    /* HuggingFaceH4/zephyr-7b-beta (trim_blocks keeps each line's newline) */
    expect(KVL_CHAT_ZEPHYR, conv, 4, true,
           "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\nHi! "
           "How can I help?</s>\n<|user|>\nTell me a joke.</s>\n<|assistant|>\n");
    /* microsoft/Phi-3.5-mini-instruct */
    expect(KVL_CHAT_PHI3, conv, 4, true,
           "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>"
           "\nHi! How can I help?<|end|>\n<|user|>\nTell me a joke.<|end|>\n<|assistant|>\n");
    /* google/gemma-3-1b-it: the system text prefixes the first turn */
    expect(KVL_CHAT_GEMMA, conv, 4, true,
           "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n<start_"
           "of_turn>model\nHi! How can I help?<end_of_turn>\n<start_of_turn>user\nTell me a joke."
           "<end_of_turn>\n<start_of_turn>model\n");
    /* kvllm's own (docs/chat.md): BOS, then each text and a newline */
    expect(KVL_CHAT_PLAIN, conv, 4, true,
           "<s>You are a helpful assistant.\nHello!\nHi! How can I help?\nTell me a joke.\n");
}

/* What each template does with surrounding whitespace and other shapes. */
static void variants(void) {
    const kvl_chat_message ws[2] = {{"user", "  hi \n"}, {"assistant", " ok  "}};
    /* Llama 2 strips both; without a system message no <<SYS>> block */
    expect(KVL_CHAT_LLAMA2, ws, 2, true, "<s>[INST] hi [/INST] ok </s>");
    expect(KVL_CHAT_LLAMA3, ws, 1, true,
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_"
           "header_id|>assistant<|end_header_id|>\n\n");
    expect(KVL_CHAT_CHATML, ws, 2, false,
           "<|im_start|>user\n  hi \n<|im_end|>\n<|im_start|>assistant\n ok  <|im_end|>\n");
    /* Mistral trims only the assistant */
    expect(KVL_CHAT_MISTRAL, ws, 2, true, "<s>[INST]   hi \n[/INST] ok</s>");
    expect(KVL_CHAT_GEMMA, ws, 2, false,
           "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nok<end_of_turn>\n");
    /* Llama 2 with a system message strips the joined text: the user's
     * leading spaces stay, an all-space user turn eats the blank line */
    const kvl_chat_message sys_ws[2] = {{"system", "S"}, {"user", "  u  "}};
    expect(KVL_CHAT_LLAMA2, sys_ws, 2, true, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\n  u [/INST]");
    const kvl_chat_message sys_blank[2] = {{"system", "S"}, {"user", " \t"}};
    expect(KVL_CHAT_LLAMA2, sys_blank, 2, true, "<s>[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
    /* Unicode spaces count as Python's strip() counts them (U+00A0, U+3000) */
    const kvl_chat_message uni[1] = {{"user", "\xc2\xa0x\xe3\x80\x80"}};
    expect(KVL_CHAT_GEMMA, uni, 1, false, "<bos><start_of_turn>user\nx<end_of_turn>\n");
    /* Phi-3.5 skips an empty system message and ends with EOS without the
     * generation prompt */
    const kvl_chat_message empty_sys[2] = {{"system", ""}, {"user", "u"}};
    expect(KVL_CHAT_PHI3, empty_sys, 2, false, "<|user|>\nu<|end|>\n<|endoftext|>");
    /* Mistral drops the system message when the last turn is not a user's */
    expect(KVL_CHAT_MISTRAL, conv, 3, false, "<s>[INST] Hello![/INST] Hi! How can I help?</s>");
    /* developer is the system role; NULL content is empty */
    const kvl_chat_message dev[2] = {{"developer", "D"}, {"user", NULL}};
    expect(KVL_CHAT_CHATML, dev, 2, true,
           "<|im_start|>system\nD<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>"
           "assistant\n");
    /* the generation prompt off where a template has one */
    expect(KVL_CHAT_ZEPHYR, conv + 1, 1, false, "<|user|>\nHello!</s>\n");
}

static void errors(void) {
    kvl_chat_params p = kvl_chat_defaults(KVL_CHAT_LLAMA2);
    char buf[256];
    memset(buf, 'x', sizeof buf);
    size_t len = 0;
    kvl_error err = {0};
    const kvl_chat_message bad_role[2] = {{"user", "a"}, {"tool", "b"}};
    CHECK_EQ_INT(kvl_chat_apply(&p, bad_role, 2, buf, sizeof buf, &len, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "messages[1].role 'tool'");
    /* two users in a row: the templates that need alternation refuse */
    const kvl_chat_message twice[3] = {{"system", "s"}, {"user", "a"}, {"user", "b"}};
    static const kvl_chat_template strict[] = {KVL_CHAT_LLAMA2, KVL_CHAT_MISTRAL, KVL_CHAT_GEMMA};
    for (int i = 0; i < 3; i++) {
        p = kvl_chat_defaults(strict[i]);
        CHECK_EQ_INT(kvl_chat_apply(&p, twice, 3, buf, sizeof buf, &len, &err), KVL_E_INVALID);
        CHECK_CONTAINS(err.msg, "messages[2].role is user");
    }
    p = kvl_chat_defaults(KVL_CHAT_CHATML); /* ChatML takes any order */
    CHECK_EQ_INT(kvl_chat_apply(&p, twice, 3, buf, sizeof buf, &len, &err), KVL_OK);
    /* a system message after the first */
    const kvl_chat_message late_sys[2] = {{"user", "a"}, {"system", "s"}};
    p = kvl_chat_defaults(KVL_CHAT_GEMMA);
    CHECK_EQ_INT(kvl_chat_apply(&p, late_sys, 2, buf, sizeof buf, &len, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "messages[1].role is system");
    CHECK_EQ_INT(kvl_chat_apply(&p, conv, 0, buf, sizeof buf, &len, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "messages");
    kvl_chat_params none = kvl_chat_defaults(KVL_CHAT_NONE);
    CHECK_EQ_INT(kvl_chat_apply(&none, conv, 4, buf, sizeof buf, &len, &err), KVL_E_INVALID);
    /* the length query, and a buffer one byte short: KVL_E_LIMIT, untouched */
    p = kvl_chat_defaults(KVL_CHAT_LLAMA3);
    size_t need = 0;
    CHECK_EQ_INT(kvl_chat_apply(&p, conv, 4, NULL, 0, &need, &err), KVL_E_LIMIT);
    CHECK(need > 100);
    char *small = malloc(need);
    memset(small, 'y', need);
    CHECK_EQ_INT(kvl_chat_apply(&p, conv, 4, small, need - 1, &len, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "bytes");
    bool untouched = true;
    for (size_t i = 0; i < need; i++)
        untouched = untouched && small[i] == 'y';
    CHECK(untouched);
    /* exactly the length: fits, no room for the NUL */
    CHECK_EQ_INT(kvl_chat_apply(&p, conv, 4, small, need, &len, &err), KVL_OK);
    CHECK_EQ_INT(len, need);
    CHECK(!memcmp(small, "<|begin_of_text|>", 17));
    free(small);
    /* an oversized conversation: one 64 MiB message */
    size_t huge_n = KVL_CHAT_MAX_BYTES + 1;
    char *huge = malloc(huge_n + 1);
    memset(huge, 'a', huge_n);
    huge[huge_n] = '\0';
    const kvl_chat_message big[1] = {{"user", huge}};
    CHECK_EQ_INT(kvl_chat_apply(&p, big, 1, NULL, 0, &len, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "messages: the rendered conversation is over");
    free(huge);
    CHECK_EQ_INT(kvl_chat_apply(&p, conv, (size_t)KVL_CHAT_MAX_MESSAGES + 1, NULL, 0, &len, &err),
                 KVL_E_LIMIT);
}

static void names(void) {
    for (int t = KVL_CHAT_LLAMA2; t <= KVL_CHAT_PLAIN; t++) {
        kvl_chat_template back = KVL_CHAT_NONE;
        CHECK_EQ_INT(
            kvl_chat_template_parse(kvl_chat_template_name((kvl_chat_template)t), &back, NULL),
            KVL_OK);
        CHECK_EQ_INT(back, t);
    }
    kvl_error err;
    kvl_chat_template keep = KVL_CHAT_GEMMA;
    CHECK_EQ_INT(kvl_chat_template_parse("vicuna", &keep, &err), KVL_E_INVALID);
    CHECK_EQ_INT(keep, KVL_CHAT_GEMMA);
    CHECK_CONTAINS(err.msg, "'vicuna'");
    CHECK_CONTAINS(err.msg, "chatml");
    CHECK_EQ_INT(kvl_chat_template_parse("none", &keep, &err), KVL_E_INVALID);
    CHECK(!strcmp(kvl_chat_template_name((kvl_chat_template)99), "?"));
}

/* Template texts as the models publish them (tokenizer_config.json's
 * chat_template; GGUF converters copy it into tokenizer.chat_template). */
static void detection(void) {
    static const struct {
        const char *model, *jinja;
        kvl_chat_template want;
    } cases[] = {
        {"meta-llama/Llama-2-7b-chat-hf",
         "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
         "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
         "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
         "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
         "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 "
         "== 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
         "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
         "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] "
         "' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + "
         "content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
         KVL_CHAT_LLAMA2},
        {"meta-llama/Meta-Llama-3-8B-Instruct",
         "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
         "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] "
         "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
         "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
         "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
         KVL_CHAT_LLAMA3},
        {"Qwen/Qwen2-7B-Instruct",
         "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
         "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif "
         "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
         "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
         "endif %}",
         KVL_CHAT_CHATML},
        {"mistralai/Mistral-7B-Instruct-v0.1",
         "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
         "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
         "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
         "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
         "%}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "
         "assistant roles are supported!') }}{% endif %}{% endfor %}",
         KVL_CHAT_MISTRAL},
        {"HuggingFaceH4/zephyr-7b-beta",
         "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + "
         "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
         "'<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
         "'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif "
         "%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% "
         "endfor %}",
         KVL_CHAT_ZEPHYR},
        {"microsoft/Phi-3.5-mini-instruct",
         "{% for message in messages %}{% if message['role'] == 'system' and message['content'] "
         "%}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == "
         "'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] "
         "== 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif "
         "%}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ "
         "eos_token }}{% endif %}",
         KVL_CHAT_PHI3},
        {"google/gemma-2-2b-it",
         "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
         "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
         "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
         "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
         "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% "
         "endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
         "'<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt "
         "%}{{'<start_of_turn>model\\n'}}{% endif %}",
         KVL_CHAT_GEMMA},
        {"microsoft/phi-4 (another markup)",
         "{% for message in messages %}{% if (message['role'] == 'system') "
         "%}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% "
         "endfor %}",
         KVL_CHAT_NONE},
        {"a template of no known family", "{% for m in messages %}{{ m['content'] }}{% endfor %}",
         KVL_CHAT_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kvl_chat_template got = kvl_chat_template_detect(cases[i].jinja, strlen(cases[i].jinja));
        CHECK_EQ_INT(got, cases[i].want);
        if (got != cases[i].want)
            fprintf(stderr, "  detect %s: got %s\n", cases[i].model, kvl_chat_template_name(got));
        /* the length bounds the search: a cut text loses its late markers */
        CHECK_EQ_INT(kvl_chat_template_detect(cases[i].jinja, 8), KVL_CHAT_NONE);
    }
    CHECK_EQ_INT(kvl_chat_template_detect(NULL, 0), KVL_CHAT_NONE);
}

/* A model whose file carries tokenizer.chat_template: the shipped model's
 * weights with the metadata of a GGUF written here holding only that key
 * (kvl_chat_params_for_model reads the key from m->gguf). */
static void file_template(kvl_model *m, const char *jinja, kvl_status want_st,
                          kvl_chat_template want) {
    kvl_error err;
    kvl_gguf_writer *w = NULL;
    kvl_gguf *g = NULL;
    const char *path = kvt_tmp("chat_template.gguf");
    CHECK(kvl_gguf_writer_init(&w, &err) == KVL_OK &&
          kvl_gguf_writer_add_str(w, "tokenizer.chat_template", jinja, &err) == KVL_OK &&
          kvl_gguf_writer_begin(w, path, &err) == KVL_OK &&
          kvl_gguf_writer_finish(w, &err) == KVL_OK && kvl_gguf_open(path, &g, &err) == KVL_OK);
    kvl_gguf_writer_free(w);
    if (!g)
        return;
    kvl_gguf *keep = m->gguf;
    m->gguf = g;
    kvl_chat_params p = kvl_chat_defaults(KVL_CHAT_NONE);
    CHECK_EQ_INT(kvl_chat_params_for_model(m, NULL, &p, &err), want_st);
    CHECK_EQ_INT(p.tmpl, want);
    if (want_st == KVL_OK) /* ChatML writes no BOS; EOS is the vocabulary's */
        CHECK(!strcmp(p.bos_token, "") && !strcmp(p.eos_token, "</s>"));
    else
        CHECK_CONTAINS(err.msg, "--chat-template");
    /* a name wins over the file */
    CHECK_EQ_INT(kvl_chat_params_for_model(m, "llama3", &p, &err), KVL_OK);
    CHECK_EQ_INT(p.tmpl, KVL_CHAT_LLAMA3);
    m->gguf = keep;
    kvl_gguf_free(g);
}

/* The shipped model has no template: a status and a message naming the
 * flag; with a name, its BOS text and control-token parsing. */
static void model_file(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "skip model checks: %s\n", err.msg);
        return;
    }
    kvl_chat_params p = kvl_chat_defaults(KVL_CHAT_GEMMA);
    CHECK_EQ_INT(kvl_chat_params_for_model(m, NULL, &p, &err), KVL_E_NOT_FOUND);
    CHECK_CONTAINS(err.msg, "--chat-template");
    CHECK_EQ_INT(p.tmpl, KVL_CHAT_GEMMA); /* unchanged on error */
    CHECK_EQ_INT(kvl_chat_params_for_model(m, "bogus", &p, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "--chat-template");
    CHECK_EQ_INT(kvl_chat_params_for_model(m, "plain", &p, &err), KVL_OK);
    CHECK_EQ_INT(p.tmpl, KVL_CHAT_PLAIN);
    CHECK(!strcmp(p.bos_token, "<s>"));
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    char text[256];
    size_t len;
    CHECK_EQ_INT(kvl_chat_apply(&p, conv + 1, 1, text, sizeof text, &len, &err), KVL_OK);
    int32_t ids[64], plain_ids[64];
    size_t n = 0, n_plain = 0;
    CHECK_EQ_INT(kvl_chat_tokenize(m, text, len, ids, 64, &n, &err), KVL_OK);
    /* "<s>" became the BOS id, and the rest is the text's own tokens */
    CHECK(n >= 2);
    CHECK_EQ_INT(ids[0], mi.bos);
    CHECK_EQ_INT(kvl_tokenize(m, "Hello!\n", 7, true, plain_ids, 64, &n_plain, &err), KVL_OK);
    CHECK_EQ_INT(n, n_plain);
    CHECK(n == n_plain && !memcmp(ids, plain_ids, n * sizeof *ids));
    CHECK_EQ_INT(kvl_chat_tokenize(m, text, len, ids, 1, &n, &err), KVL_E_LIMIT);
    file_template(m, "{{'<|im_start|>' + message['role'] + '\\n'}}", KVL_OK, KVL_CHAT_CHATML);
    file_template(m, "{% for m in messages %}{{ m.content }}{% endfor %}", KVL_E_UNSUPPORTED,
                  KVL_CHAT_NONE);
    kvl_model_free(m);
}

/* Random conversations (seeded): the length query equals the rendering;
 * for the templates that never move or drop text (chatml, llama3, zephyr,
 * plain)
 * the conversation less its last message, without the generation prompt,
 * renders to a prefix of the whole, which kvllm chat's reuse of a turn's
 * tokens relies on; and for the strict ones, any order that alternates is
 * accepted. */
static void random_conversations(void) {
    static const char *const pieces[] = {"a",      " ",        "\n",    "\t",    "<|im_end|>",
                                         "[INST]", "\xc2\xa0", "Hello", "  x  ", ""};
    static const char *const roles[] = {"system", "user", "assistant"};
    uint64_t rng = 42;
    char texts[8][64];
    kvl_chat_message m[8];
    int bad = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t n =
            1 + (size_t)((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 61);
        bool strict = iter % 2;
        for (size_t i = 0; i < n; i++) {
            texts[i][0] = '\0';
            for (int k = 0; k < 4; k++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                strcat(texts[i], pieces[(rng >> 33) % 10]);
            }
            m[i].content = texts[i];
            m[i].role = strict ? (i % 2 ? "assistant" : "user") : roles[(rng >> 40) % 3];
        }
        static const kvl_chat_template all[] = {KVL_CHAT_LLAMA2,  KVL_CHAT_LLAMA3, KVL_CHAT_CHATML,
                                                KVL_CHAT_MISTRAL, KVL_CHAT_ZEPHYR, KVL_CHAT_PHI3,
                                                KVL_CHAT_GEMMA,   KVL_CHAT_PLAIN};
        for (size_t ti = 0; ti < 8; ti++) {
            kvl_chat_template t = all[ti];
            bool strict_t = t == KVL_CHAT_LLAMA2 || t == KVL_CHAT_MISTRAL || t == KVL_CHAT_GEMMA;
            kvl_chat_params p = kvl_chat_defaults(t);
            char whole[1024], part[1024];
            size_t need = 0, len = 0, plen = 0;
            kvl_status q = kvl_chat_apply(&p, m, n, NULL, 0, &need, NULL);
            kvl_status st = kvl_chat_apply(&p, m, n, whole, sizeof whole, &len, NULL);
            if (strict && st != KVL_OK)
                bad++; /* alternating from user: always accepted */
            if (st == KVL_OK && (q != KVL_E_LIMIT || need != len || whole[len] != '\0'))
                bad++;
            if (st != KVL_OK || strict_t || t == KVL_CHAT_PHI3 || n < 2)
                continue;
            p.add_generation_prompt = false;
            if (kvl_chat_apply(&p, m, n - 1, part, sizeof part, &plen, NULL) != KVL_OK ||
                plen > len || memcmp(part, whole, plen))
                bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

int main(void) {
    fixed_conversation();
    random_conversations();
    variants();
    errors();
    names();
    detection();
    model_file();
    return kvt_finish("test_chat_template");
}
