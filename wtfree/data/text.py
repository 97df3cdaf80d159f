"""A character-level language-modelling set that ships with Python: its own help texts.

``dataset='pydoc_chars'`` is the text of every help topic in the running
Python's standard library (``pydoc_data.topics``: the reference manual's
sections on statements, operators, types and more, about half a million
characters of English prose with code), joined in the topics' sorted order.
Nothing is downloaded. Its size varies a little between Python versions; the
records of the experiments name the version.

Characters are the tokens: printable ASCII and the newline, and one token for
everything else. The first 90 % of the text is the training split, the rest
the test split; each split is cut into non-overlapping windows of
``config.context_length`` characters, the model's input, and the same window
shifted by one, its targets. The metric is bits per character
(``eval/bits_per_token``).
"""

import functools

import numpy as np

from wtfree.data.source import ArraySource, Splits

# Token 0 is every character outside printable ASCII and the newline.
VOCABULARY = "\0\n" + "".join(chr(c) for c in range(32, 127))
TRAIN_FRACTION = 0.9
_INDEX = {c: i for i, c in enumerate(VOCABULARY)}


@functools.lru_cache(maxsize=1)
def pydoc_text() -> str:
  """The help topics of the running Python, joined in sorted order."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  return "".join(topics.topics[name] for name in sorted(topics.topics))


def encode(text: str) -> np.ndarray:
  """The tokens of ``text``: int32 indices into `VOCABULARY` (0 for characters outside it)."""
  return np.array([_INDEX.get(c, 0) for c in text], np.int32)


def decode(tokens) -> str:
  """The text of ``tokens`` (token 0 shown as U+FFFD)."""
  return "".join("\ufffd" if t == 0 else VOCABULARY[t] for t in np.asarray(tokens).ravel())


@functools.lru_cache(maxsize=1)
def pydoc_tokens() -> tuple[np.ndarray, np.ndarray]:
  """``(train, test)``: the encoded corpus split 90 / 10 at a fixed position."""
  tokens = encode(pydoc_text())
  cut = int(TRAIN_FRACTION * len(tokens))
  return tokens[:cut], tokens[cut:]


def windows(tokens: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """Non-overlapping inputs ``[n, length]`` and their next-character targets ``[n, length]``."""
  n = (len(tokens) - 1) // length
  if n < 1:
    raise ValueError(f"context_length {length} is longer than the {len(tokens) - 1} characters of a split; lower it")
  x = tokens[: n * length].reshape(n, length)
  y = tokens[1 : n * length + 1].reshape(n, length)
  return x, y


def unigram_bits(train: np.ndarray, test: np.ndarray) -> float:
  """Bits per character of ``test`` under the character frequencies of ``train`` (add-one smoothed).

  The floor a language model must beat to have learned more than which
  characters are common.
  """
  counts = np.bincount(train, minlength=len(VOCABULARY)) + 1.0
  logp = np.log2(counts / counts.sum())
  return float(-np.mean(logp[test]))


def pydoc_chars(data) -> Splits:
  """The 'pydoc_chars' data set: windows of ``data.context_length`` characters (`wtfree.settings.Data`)."""
  length = int(data.context_length)
  if length < 1:
    raise ValueError(f"context_length {length} must be a positive number of characters")
  train, test = pydoc_tokens()
  (x_train, y_train), (x_test, y_test) = windows(train, length), windows(test, length)
  return Splits(
      train=ArraySource(x_train, y_train),
      test=ArraySource(x_test, y_test),
      num_classes=len(VOCABULARY),
      input_shape=(length,),
      task="language_model",
      input_dtype="int32",
  )
