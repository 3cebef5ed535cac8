"""Byte-level BPE tokenizers trained offline (no hub), saved as a plain HF fast tokenizer.

    tok = train_bpe_tokenizer(texts, vocab_size=2000, extra_special=TASK_TOKENS)

Every word gets a leading-space marker (add_prefix_space), so a word is the same token at the
start of a sentence and in the middle; decoded text is stripped.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
TASK_TOKENS = ["<|transcribe|>", "<|translate|>", "<|en|>", "<|fr|>", "<|de|>"]


def train_bpe_tokenizer(texts, vocab_size: int, extra_special=()) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    special = [BOS, EOS, PAD, *extra_special]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                  additional_special_tokens=list(extra_special), clean_up_tokenization_spaces=False)
    return out
