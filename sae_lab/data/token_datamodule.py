"""FeatureTokenDataModule: training tokens (live or cached) and validation images for the SAE."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from sae_lab.data.token_cache import CachedTokens, read_manifest, write_token_cache
from sae_lab.data.tokens import LiveTokens, TokenMoments, image_datamodule, token_loader
from sae_lab.models.tokens import fmap_to_tokens


class FeatureTokenDataModule(L.LightningDataModule):
    """Tokens of a trained classifier's explained layer.

    Training batches are (batch_size, C) raw tokens; validation batches are the classifier's own
    held-out images (so validation measures FVU over every token of the split *and* spliced
    accuracy). μ and σ are computed once, in float64, over the training tokens (all ranks).

    Args:
        classifier: the classifier's Lightning checkpoint (`best.ckpt`).
        source: "cached" (memory-mapped shards, written on first use) or "live" (classifier in the loop).
        cache_dir: shard folder for "cached" (None: `<checkpoint folder>/tokens`).
        data: image source override (None: the one the classifier was trained on).
        batch_size: tokens per training batch (per device).
        image_batch_size: images per classifier forward pass (live tokens, validation).
        shuffle_buffer: tokens held by the live source's shuffle buffer.
        seed: shuffling seed (combined with the epoch).
        num_workers: DataLoader workers for cached tokens and validation images.
        stats_images: images used for μ and σ with the live source (None: all training images).
    """

    def __init__(
        self,
        classifier: str,
        source: str = "cached",
        cache_dir: str | None = None,
        data: str | None = None,
        batch_size: int = 4096,
        image_batch_size: int = 128,
        shuffle_buffer: int = 65536,
        seed: int = 0,
        num_workers: int = 0,
        stats_images: int | None = None,
    ):
        super().__init__()
        if source not in ("cached", "live"):
            raise ValueError(f"source must be 'cached' or 'live', got {source!r}")
        if not Path(classifier).is_file():
            raise FileNotFoundError(f"classifier checkpoint {classifier} does not exist (train one with `fit` first)")
        self.save_hyperparameters()
        self.cache_dir = Path(cache_dir) if cache_dir else Path(classifier).parent / "tokens"
        self._classifier = None
        self.images = None
        self.token_mean = self.token_std = None
        self.grid: tuple[int, int] | None = None

    @property
    def classifier(self):
        if self._classifier is None:
            from sae_lab.models.classifier_io import load_classifier

            self._classifier = load_classifier(self.hparams.classifier)
        return self._classifier

    @property
    def d_in(self) -> int:
        return self.classifier.net.channels

    def prepare_data(self) -> None:
        hp = self.hparams
        if hp.source == "cached":
            write_token_cache(hp.classifier, self.cache_dir, data=hp.data, batch_size=hp.image_batch_size)

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        hp = self.hparams
        self.images = image_datamodule(self.classifier.data_hparams, hp.data, hp.image_batch_size, hp.num_workers)
        self.images.prepare_data()
        self.images.setup("fit")
        if hp.source == "cached":
            manifest = read_manifest(self.cache_dir)
            if manifest["params"]["fingerprint"] != self.classifier.fingerprint:
                raise ValueError(
                    f"the token cache {self.cache_dir} was written by another classifier "
                    f"({manifest['params']['fingerprint']} != {self.classifier.fingerprint}); rebuild it"
                )
            self.token_mean = torch.tensor(manifest["mean"])
            self.token_std = torch.tensor(manifest["std"])
            self.grid = tuple(manifest["splits"]["train"]["grid"])
        else:
            self._live_moments()

    @torch.no_grad()
    def _live_moments(self) -> None:
        from sae_lab.data.tokens import equal_share, rank_and_world

        rank, world = rank_and_world()
        ds = self.images.datasets["train"]
        n = min(len(ds), self.hparams.stats_images or len(ds))
        net, device = self.classifier.net.to(self._device()), self._device()
        moments = TokenMoments(self.d_in)
        mine = list(range(n))[equal_share(n, rank, world)]
        for a in range(0, len(mine), self.hparams.image_batch_size):
            images = torch.stack([ds[i]["image"] for i in mine[a : a + self.hparams.image_batch_size]])
            fmap = net.features(images.to(device))
            self.grid = tuple(fmap.shape[2:])
            moments.update(fmap_to_tokens(fmap))
        moments.all_reduce()
        self.token_mean, self.token_std = moments.compute()

    def sample_tokens(self, n: int = 16384) -> torch.Tensor:
        """Up to n training tokens (for initialising b_dec)."""
        batches, got = [], 0
        for batch in self._train_dataset(shuffle=True):
            batches.append(batch)
            got += len(batch)
            if got >= n:
                break
        return torch.cat(batches)[:n]

    def _train_dataset(self, shuffle: bool = True):
        hp = self.hparams
        if hp.source == "cached":
            return CachedTokens(self.cache_dir, "train", hp.batch_size, shuffle, hp.seed, self._epoch)
        net = self.classifier.net
        return LiveTokens(net, self.images.datasets["train"], hp.batch_size, shuffle, hp.seed, hp.shuffle_buffer,
                          hp.image_batch_size, self._epoch, self._device)  # fmt: skip

    def train_dataloader(self):
        workers = self.hparams.num_workers if self.hparams.source == "cached" else 0
        return token_loader(self._train_dataset(), workers)

    def val_dataloader(self):
        return self.images.val_dataloader()

    def test_dataloader(self):
        return self.images.test_dataloader()
