"""A tiny random Phi-3 checkpoint (config, weights, BPE tokenizer, chat template) built locally.

Run ``python -m tests.export.tiny_phi3 DIR`` to build one for a manual ``bot export --model DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
_CORPUS = (
    "The capital of France is Paris. The capital of Italy is Rome. Hello, how are you today? "
    "I am a helpful assistant in a team chat. Answer clearly and concisely. "
    "OpenVINO runs language models on CPUs, GPUs and NPUs. Weights can be compressed to four bits. "
    "What is the weather like? It is sunny and warm. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. "
)


def build_tiny_phi3(directory: Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Write a random two-layer Phi-3 checkpoint with a trained BPE tokenizer into ``directory``."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

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
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        original_max_position_embeddings=1024,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = [ids["<|endoftext|>"], ids["<|end|>"]]
    model.save_pretrained(directory)
    return directory


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
    print(build_tiny_phi3(Path(sys.argv[1])))
