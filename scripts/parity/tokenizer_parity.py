#!/usr/bin/env python3
"""Token-for-token parity of `gmsa tokenize` with Hugging Face `tokenizers` on tokenizer.json.

Subcommands:
  hf          (needs `tokenizers`; `tiktoken` optional) train byte-level BPE tokenizers in the
              LLaMA-3, Qwen2 (with NFC) and GPT-2 styles on DATA_DIR text, encode every corpus
              text and edge case with HF and with gmsa, and require identical ids and decoded
              text (HF decode(ids, skip_special_tokens=True)). Exit status 1 on any mismatch.
  naive-train (pure Python + `regex`) write a small LLaMA-3-style tokenizer.json with a naive
              BPE trainer, for benchmarks and local checks where `tokenizers` is missing.
  reference   (pure Python + `regex`) compare gmsa with a slow reference encoder written here
              (regex split + rank-ordered merges) on a tokenizer.json without added-token
              options or normalizer: a local check, weaker than `hf`.

Corpora (from DATA_DIR, i.e. shared/data): TinyStories paragraphs, WikiText-2 lines, SQuAD
contexts and questions, HotpotQA questions and context paragraphs, plus hand-written edge
cases (emoji, CJK, combining marks, runs of spaces/digits, special-token spellings, invalid
bytes, decoding of id prefixes that split characters).
"""
import argparse
import base64
import collections
import json
import os
import subprocess
import sys
import time

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

EDGE_CASES = [
    "", " ", "  ", "\n", "\t\t", " " * 100, "\n" * 50, " \n \n  \n", "\r\n\r\n", "a\r\nb",
    "1" * 40, "1234567890" * 5, "3.14159 2,000,000 1e-10 0x1F", "  12  345 6789 ",
    "😀", "👩‍👩‍👧‍👦 family", "🇺🇸🇫🇷 flags", "❤️‍🔥", "emoji😀in😀words",
    "日本語のテキスト、中文文本。한국어 텍스트", "中文，标点！", "ｆｕｌｌｗｉｄｔｈ",
    "e\u0301 a\u0308 n\u0303 o\u0302\u0323", "\u212b Angstrom", "\u1100\u1161\u11a8 jamo",
    "ﬁ ligature", "café naïve résumé", "Ελληνικά Кириллица", "مرحبا بالعالم", "नमस्ते दुनिया",
    "สวัสดีชาวโลก", "I'm you're we'LL THEY'VE she'D it'S 'S'T'RE", "don't won't y'all",
    "<|im_start|>user\nhello<|im_end|>\n", "<|begin_of_text|>x<|eot_id|><|eot_id|>",
    "<|im_start", "<|", "<|endoftext|><|endoftext|>text", "a<|im_end|>b",
    "\u00a0\u2003\u3000x", "\u180e", "x\u180e!", "\ufeffBOM", "zero\u200bwidth", "nul\u0000char",
    "\U0010ffff\U0001f600", "a" * 5000, "ab" * 3000, "Hello, world!!! ???",
    "http://example.com/path?x=1&y=2#frag", "def f(x):\n    return x**2\n\n\n",
    "tabs\tand\tspaces \t \t mixed", "ALLCAPS and MiXeD CaSe", "end with spaces   ",
]

INVALID_BYTES = [b"\xff", b"abc\x80", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82",
                 b"\xc0\xaf", b"valid \xe2\x82\xac then \xfe"]

SPECIALS = {
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "gpt2": ["<|endoftext|>"],
}


# ---------------------------------------------------------------------------------------------
# corpora
# ---------------------------------------------------------------------------------------------
def read_corpora(data_dir):
    """Returns {corpus name: [texts]}."""
    c = {}
    with open(os.path.join(data_dir, "tinystories/tinystories_valid_head.txt"), encoding="utf-8") as f:
        c["tinystories"] = [p for p in f.read().split("\n\n") if p.strip()]
    texts = []
    for split in ("valid", "test"):
        with open(os.path.join(data_dir, f"wikitext2/{split}.txt"), encoding="utf-8") as f:
            texts += [line for line in f.read().split("\n") if line.strip()]
    c["wikitext2"] = texts
    with open(os.path.join(data_dir, "squad-v1.1/dev-v1.1.json"), encoding="utf-8") as f:
        squad = json.load(f)
    texts = []
    for article in squad["data"]:
        for para in article["paragraphs"]:
            texts.append(para["context"])
            texts += [qa["question"] for qa in para["qas"]]
    c["squad"] = texts
    texts = []
    with open(os.path.join(data_dir, "hotpotqa/hotpot_dev_distractor_500.jsonl"), encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            texts.append(ex["question"])
            texts += [title + "\n" + "".join(sents) for title, sents in ex["context"]]
    c["hotpotqa"] = texts
    return c


def training_texts(data_dir):
    with open(os.path.join(data_dir, "tinystories/tinystories_train_head.txt"), encoding="utf-8") as f:
        yield from f.read().split("\n\n")
    with open(os.path.join(data_dir, "wikitext2/test.txt"), encoding="utf-8") as f:
        yield from f.read().split("\n")
    yield from EDGE_CASES  # so CJK/emoji bytes get a few merges too


# ---------------------------------------------------------------------------------------------
# running gmsa
# ---------------------------------------------------------------------------------------------
def run_gmsa(gmsa, tokenizer_path, records, work, tag):
    """records: list of dicts for --jsonl-in. Returns the parsed output lines."""
    inp = os.path.join(work, f"{tag}.in.jsonl")
    out = os.path.join(work, f"{tag}.out.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    subprocess.run([gmsa, "tokenize", "--tokenizer", tokenizer_path, "--jsonl-in", inp, "--jsonl-out", out],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class Tally:
    def __init__(self):
        self.rows = collections.OrderedDict()
        self.examples = []

    def add(self, key, ok_ids, ok_text, n_tokens, detail):
        row = self.rows.setdefault(key, {"texts": 0, "tokens": 0, "id_mismatch": 0, "text_mismatch": 0})
        row["texts"] += 1
        row["tokens"] += n_tokens
        row["id_mismatch"] += not ok_ids
        row["text_mismatch"] += not ok_text
        if (not ok_ids or not ok_text) and len(self.examples) < 20:
            self.examples.append((key, detail))

    def failed(self):
        return any(r["id_mismatch"] or r["text_mismatch"] for r in self.rows.values())

    def print(self, title):
        print(f"\n{title}\n")
        print("| tokenizer | corpus | texts | tokens | id mismatches | text mismatches |")
        print("|---|---|---:|---:|---:|---:|")
        for (tok, corpus), r in self.rows.items():
            print(f"| {tok} | {corpus} | {r['texts']} | {r['tokens']} | {r['id_mismatch']} | {r['text_mismatch']} |")
        for key, detail in self.examples:
            print(f"MISMATCH {key}: {detail}")


def first_diff(a, b):
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at token {n}: ours {a[n:n + 5]} vs reference {b[n:n + 5]}"


# ---------------------------------------------------------------------------------------------
# hf: train with `tokenizers`, compare
# ---------------------------------------------------------------------------------------------
def train_hf(style, data_dir, vocab_size, out_dir):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import AddedToken

    tok = Tokenizer(models.BPE(ignore_merges=(style == "llama3")))
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        pattern = LLAMA3_PATTERN if style == "llama3" else QWEN2_PATTERN
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS[style], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_texts(data_dir), trainer=trainer)
    if style == "llama3":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
        config = {"bos_token": bos, "eos_token": "<|eot_id|>", "add_bos_token": True}
    elif style == "qwen2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    else:
        # GPT-2 style also exercises non-special added tokens and lstrip/rstrip.
        tok.add_tokens([AddedToken("hello world", normalized=True), AddedToken("[MASK]", lstrip=True, rstrip=True)])
        config = {"eos_token": "<|endoftext|>"}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "tokenizer.json")
    tok.save(path)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return tok, path


def decode_records(tok, texts):
    """Prefixes of the ids of non-ASCII texts: decoding must cut characters the same way."""
    out = []
    for t in texts:
        if t.isascii():
            continue
        ids = tok.encode(t, add_special_tokens=False).ids[:40]
        out += [ids[:k] for k in range(1, len(ids) + 1)]
        out.append(ids[1:])  # starts mid-character
    return out


def cmd_hf(args):
    import tokenizers
    print(f"tokenizers {tokenizers.__version__}")
    corpora = read_corpora(args.data)
    corpora["edge_cases"] = EDGE_CASES
    os.makedirs(args.work, exist_ok=True)
    tally = Tally()
    for style in ("llama3", "qwen2", "gpt2"):
        tok, path = train_hf(style, args.data, args.vocab_size, os.path.join(args.work, style))
        print(f"{style}: trained {tok.get_vocab_size()} tokens -> {path}")
        for corpus, texts in corpora.items():
            t0 = time.time()
            ours = run_gmsa(args.gmsa, path, [{"text": t} for t in texts], args.work, f"{style}.{corpus}")
            t1 = time.time()
            ref = tok.encode_batch(texts, add_special_tokens=False)
            t2 = time.time()
            print(f"  {corpus}: {len(texts)} texts, gmsa {t1 - t0:.2f}s (process), HF {t2 - t1:.2f}s")
            for text, mine, enc in zip(texts, ours, ref):
                ids = enc.ids
                ok_ids = mine.get("ids") == ids
                ok_text = mine.get("decoded") == tok.decode(ids, skip_special_tokens=True)
                tally.add((style, corpus), ok_ids, ok_text, len(ids),
                          f"{text[:60]!r}: {mine.get('error') or first_diff(mine['ids'], ids)}")
        # decoding prefixes that split characters across tokens
        prefixes = decode_records(tok, EDGE_CASES)
        ours = run_gmsa(args.gmsa, path, [{"decode": p} for p in prefixes], args.work, f"{style}.decode")
        for p, mine in zip(prefixes, ours):
            ok = mine.get("decoded") == tok.decode(p, skip_special_tokens=True)
            tally.add((style, "decode_prefixes"), True, ok, len(p), f"{p}: {mine} vs {tok.decode(p)!r}")
        # invalid UTF-8 must fail with the offset Python's decoder reports
        ours = run_gmsa(args.gmsa, path, [{"text_b64": base64.b64encode(b).decode()} for b in INVALID_BYTES],
                        args.work, f"{style}.invalid")
        for b, mine in zip(INVALID_BYTES, ours):
            try:
                b.decode("utf-8")
                offset = None
            except UnicodeDecodeError as e:
                offset = e.start
            ok = f"invalid UTF-8 at byte offset {offset}" in mine.get("error", "")
            tally.add((style, "invalid_utf8"), ok, ok, 0, f"{b!r}: {mine}")
        if style == "llama3":
            tiktoken_check(tok, path, corpora, args)
    tally.print(f"Parity with tokenizers {tokenizers.__version__} (ids: encode(text, add_special_tokens=False); "
                "text: decode(ids, skip_special_tokens=True))")
    with open(os.path.join(args.work, "parity_counts.json"), "w") as f:
        json.dump({f"{k[0]}/{k[1]}": v for k, v in tally.rows.items()}, f, indent=1)
    if tally.failed():
        print("\nFAIL: mismatches found")
        return 1
    print("\nOK: all ids and decoded texts identical")
    return 0


def tiktoken_check(tok, path, corpora, args):
    """Informational: tiktoken with the same ranks and pattern. Its merge rule (lowest-rank
    result token) can differ from BPE merge ranks, so disagreements are counted, not failed."""
    try:
        import tiktoken
    except ImportError:
        print("  tiktoken not installed: skipped")
        return
    with open(path, encoding="utf-8") as f:
        model = json.load(f)
    n = 256
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(n)
            n += 1
    inv = {chr(c): b for b, c in zip(bs, cs)}
    specials = {t["content"]: t["id"] for t in model["added_tokens"]}
    ranks = {bytes(inv[ch] for ch in token): i for token, i in model["model"]["vocab"].items() if token not in specials}
    try:
        enc = tiktoken.Encoding("parity", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
        for corpus in ("tinystories", "wikitext2"):
            texts = corpora[corpus]
            same = sum(enc.encode(t, allowed_special="all") == tok.encode(t, add_special_tokens=False).ids
                       for t in texts)
            print(f"  tiktoken vs HF ({corpus}): {same}/{len(texts)} texts identical (informational)")
    except Exception as e:  # informational only
        print(f"  tiktoken check skipped: {e}")


# ---------------------------------------------------------------------------------------------
# naive-train and reference: pure Python
# ---------------------------------------------------------------------------------------------
def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def cmd_naive_train(args):
    import regex
    bc = byte_chars()
    pat = regex.compile(LLAMA3_PATTERN)
    counts = collections.Counter()
    for text in training_texts(args.data):
        for w in pat.findall(text):
            counts["".join(bc[b] for b in w.encode("utf-8"))] += 1
    words = [[list(w), c] for w, c in counts.items()]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, (syms, c) in enumerate(words):
        for p in zip(syms, syms[1:]):
            pairs[p] += c
            where[p].add(i)
    vocab = {bc[b]: b for b in range(256)}
    merges = []
    for _ in range(args.merges):
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        if pairs[best] < 2:
            break
        merged = best[0] + best[1]
        merges.append(list(best))
        vocab.setdefault(merged, len(vocab))
        for i in list(where[best]):
            syms, c = words[i]
            for p in zip(syms, syms[1:]):
                pairs[p] -= c
                if pairs[p] <= 0:
                    del pairs[p]
            out, k = [], 0
            while k < len(syms):
                if k + 1 < len(syms) and (syms[k], syms[k + 1]) == best:
                    out.append(merged)
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            words[i][0] = out
            for p in zip(out, out[1:]):
                pairs[p] += c
                where[p].add(i)
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(SPECIALS["llama3"])]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
          "post_processor": None,
          "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                    "ignore_merges": False, "vocab": vocab, "merges": merges}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    with open(os.path.join(os.path.dirname(os.path.abspath(args.out)), "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True}, f)
    print(f"{args.out}: {len(vocab)} tokens, {len(merges)} merges, {len(added)} special tokens")
    return 0


def reference_encode(text, pat, bc, vocab, ranks, specials):
    """Slow and plain: split off specials, regex-split, merge the lowest-ranked pair until none."""
    ids = []
    pieces = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text) if specials else [text]
    for piece in pieces:
        if piece in specials:
            ids.append(specials[piece])
            continue
        for w in pat.findall(piece):
            syms = [bc[b] for b in w.encode("utf-8")]
            while len(syms) > 1:
                best = min(range(len(syms) - 1), key=lambda k: (ranks.get((syms[k], syms[k + 1]), 1 << 60), k))
                if (syms[best], syms[best + 1]) not in ranks:
                    break
                syms[best:best + 2] = [syms[best] + syms[best + 1]]
            ids += [vocab[s] for s in syms]
    return ids


def cmd_reference(args):
    global regex
    import regex
    with open(args.tokenizer, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    ranks = {tuple(m if isinstance(m, list) else m.split(" ")): i for i, m in enumerate(tj["model"]["merges"])}
    specials = {t["content"]: t["id"] for t in tj["added_tokens"]}
    pat = regex.compile(tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"])
    bc = byte_chars()
    corpora = read_corpora(args.data)
    corpora["edge_cases"] = EDGE_CASES
    os.makedirs(args.work, exist_ok=True)
    tally = Tally()
    for corpus, texts in corpora.items():
        ours = run_gmsa(args.gmsa, args.tokenizer, [{"text": t} for t in texts], args.work, f"ref.{corpus}")
        for text, mine in zip(texts, ours):
            ref = reference_encode(text, pat, bc, vocab, ranks, specials)
            ok_ids = mine.get("ids") == ref
            plain = text
            for sp in specials:  # decode drops special tokens
                plain = plain.replace(sp, "")
            tally.add(("reference", corpus), ok_ids, mine.get("decoded") == plain, len(ref),
                      f"{text[:60]!r}: {mine.get('error') or first_diff(mine['ids'], ref)}")
    tally.print("gmsa vs the pure-Python reference encoder (text: gmsa decode == input)")
    return 1 if tally.failed() else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hf")
    h.add_argument("--gmsa", required=True, help="path to the gmsa binary")
    h.add_argument("--data", required=True, help="shared/data directory")
    h.add_argument("--work", required=True, help="scratch directory (tokenizers, JSONL files)")
    h.add_argument("--vocab-size", type=int, default=8000)
    n = sub.add_parser("naive-train")
    n.add_argument("--data", required=True)
    n.add_argument("--out", required=True)
    n.add_argument("--merges", type=int, default=2000)
    r = sub.add_parser("reference")
    r.add_argument("--gmsa", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--tokenizer", required=True, help="a tokenizer.json from naive-train")
    args = ap.parse_args()
    return {"hf": cmd_hf, "naive-train": cmd_naive_train, "reference": cmd_reference}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
