"""A character-level tokenizer for the tiny world, built locally (no hub download).

Its vocabulary is every printable ASCII character plus newline, so it can spell JSON (a tiny LLM judge
needs ``{``, ``}`` and ``"``). The chat template renders ``Q:<user>\\nA:<assistant></s>``; a prompt rendered
with ``add_generation_prompt=True`` is a prefix of the full conversation, as TRL and vLLM expect.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))
assert set(string.digits + '+-*=;. {}":,') <= set(CHARACTERS)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] }}{{ '\\n' }}"
    "{%- elif message['role'] == 'user' -%}Q:{{ message['content'] }}{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}A:{{ message['content'] }}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}A:{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The world's tokenizer: one token per character, ids 0-3 reserved for pad, bos, eos, unk."""
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK])}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
