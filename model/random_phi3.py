"""A random-weight Phi-3 checkpoint (config, weights, BPE tokenizer, chat template) built locally.

With no model hub in reach, this stands in for Phi-3-mini-4k-instruct: ``TINY`` (two small
layers) for tests of the export path, ``MINI`` (Phi-3-mini's own dimensions) for measuring the
production shape, since speed does not depend on the weights' values.  Needs the export extra
(torch, transformers, tokenizers).  Run ``python -m model.random_phi3 DIR [mini]`` to build one
for a manual ``bot export --model DIR``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# The control tokens of Phi-3-mini-4k-instruct's tokenizer, in its id order.
PHI3_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)


@dataclass(frozen=True)
class Phi3Shape:
    """The dimensions of a Phi-3 model."""

    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    context: int
    vocab_size: int | None = None  # None: as many as the trained tokenizer has


TINY = Phi3Shape(hidden_size=128, intermediate_size=256, layers=2, heads=4, context=1024)
# Phi-3-mini-4k-instruct's config.json.
MINI = Phi3Shape(hidden_size=3072, intermediate_size=8192, layers=32, heads=32, context=4096, vocab_size=32064)
_CORPUS = (
    "The capital of France is Paris. The capital of Italy is Rome. Hello, how are you today? "
    "I am a helpful assistant in a team chat. Answer clearly and concisely. "
    "OpenVINO runs language models on CPUs, GPUs and NPUs. Weights can be compressed to four bits. "
    "What is the weather like? It is sunny and warm. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. "
)


def build_random_phi3(directory: Path, shape: Phi3Shape = TINY, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Write a random Phi-3 checkpoint of ``shape`` with a BPE tokenizer of ``vocab_size`` into ``directory``."""
    from transformers import PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(directory)
    _set_chat_template(directory)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<s>", "<|endoftext|>", "<|end|>")}
    _save_random_model(directory, shape, max(shape.vocab_size or 0, len(tokenizer)), ids, seed)
    return directory


def _save_random_model(directory: Path, shape: Phi3Shape, vocab_size: int, ids: dict[str, Any], seed: int) -> None:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    parameters: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.heads,
        "max_position_embeddings": shape.context,
        "original_max_position_embeddings": shape.context,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    config = Phi3Config(**parameters)
    torch.manual_seed(seed)
    # Phi-3-mini's 3.8 B parameters take 15 GB in float32; built in float16 they take half, as the real one ships.
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16 if shape.hidden_size > TINY.hidden_size else torch.float32)
    try:
        model = Phi3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(dtype)
    model.generation_config.eos_token_id = [ids["<|endoftext|>"], ids["<|end|>"]]
    model.save_pretrained(directory)


def _train_tokenizer(vocab_size: int) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(PHI3_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    return tokenizer


def _set_chat_template(directory: Path) -> None:
    # Phi-3 ships its template inside tokenizer_config.json; newer transformers write a
    # separate chat_template.jinja instead, so put it where Phi-3 has it.
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = PHI3_CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (directory / "chat_template.jinja").unlink(missing_ok=True)


if __name__ == "__main__":
    print(build_random_phi3(Path(sys.argv[1]), MINI if sys.argv[2:] == ["mini"] else TINY))
