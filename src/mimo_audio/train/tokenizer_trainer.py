"""Audio tokenizer training (technical report; SPEC §11).

* **Stage 1**: everything trains. ``L = 10·L_A2T + 1·L_recon + 1·L_commit`` — the audio-to-text
  decoder's next-token loss on the quantised features, the multi-scale mel L1 of the decoded
  waveform, and the RVQ commitment loss; codebooks follow EMA updates (:mod:`.quantizer_train`).
* **Stage 2**: encoder and quantiser frozen; decoder + vocoder train against multi-period and
  multi-scale STFT discriminators: ``L_G = 1·L_recon + 1·L_adv + 2·L_fm``, hinge loss for D.

LR groups: ``encoder``, ``decoder`` (with the vocoder) and ``a2t`` in stage 1; ``decoder`` in stage 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import read_config
from ..text_tokenizer import TextTokenizer
from ..tokenizer import AudioTokenizer
from ..tokenizer.encoder import encoder_output_lengths
from .a2t import A2TDecoder
from .checkpointing import read_weights, resolve_checkpoint
from .config import ConfigError, TokenizerTrainConfig
from .data import BatchPlan, ClipDataset, micro_batches, rank_slice
from .discriminators import Discriminators, feature_matching_loss, hinge_d_loss, hinge_g_loss
from .distributed import all_reduce_grads, enable_checkpointing, no_sync, unwrap, wrap_model
from .mel_loss import MultiScaleMelLoss
from .optim import Schedule, build_optimizer, freeze_groups
from .quantizer_train import QuantizerTrainer
from .trainer import OptimUnit, Trainer

log = logging.getLogger("mimo_audio.train")

EVAL_CODEBOOKS = 8  # the report evaluates reconstruction with the LM's 8 codebooks


def tokenizer_group(name: str) -> str:
    """Learning-rate group of a tokenizer-training parameter."""
    if name.startswith("a2t."):
        return "a2t"
    if name.startswith("tokenizer.encoder."):
        return "encoder"
    return "decoder"


def valid_frames(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Mask ``[B, width]`` of the frames inside each row's length ``lengths [B]``."""
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


class TokenizerTrainModule(nn.Module):
    """The tokenizer (official names under ``tokenizer.``), the A2T decoder and the mel loss."""

    def __init__(self, tokenizer: AudioTokenizer, a2t: A2TDecoder | None, scales) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.a2t = a2t
        self.mel_loss = MultiScaleMelLoss(tokenizer.sample_rate, scales)
        self.quantizer: QuantizerTrainer | None = None  # set by the trainer (stage 1)

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops ``[B, S]`` → encoder features ``[B, N, d]`` and their lengths ``[B]``."""
        tok = self.tokenizer
        mels = [tok.front_end(wav[b, : int(n)]) for b, n in enumerate(lengths)]  # [T_b, n_mels]
        mel_len = torch.tensor([m.shape[0] for m in mels], device=wav.device)
        width = int(mel_len.max())
        mel = torch.stack([F.pad(m.t(), (0, width - m.shape[0])) for m in mels])  # [B, n_mels, T]
        return tok.encoder(mel, mel_len)

    def decode(self, features: torch.Tensor, lengths: torch.Tensor, samples: int) -> torch.Tensor:
        """Features ``[B, N, d]`` → waveform cut or zero-padded to ``[B, samples]``."""
        wav = self.tokenizer.decoder(features, lengths)
        return wav[:, :samples] if wav.shape[1] >= samples else F.pad(wav, (0, samples - wav.shape[1]))

    def forward(
        self,
        wav: torch.Tensor,  # [B, S]
        lengths: torch.Tensor,  # [B] valid samples
        tokens: list[list[int] | None] | None = None,
        *,
        stage: int = 1,
        key: tuple[int, ...] = (),
        codebooks: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Stage 1: loss sums ``recon [scales]``, ``commit [1]``, ``a2t [1]``. Stage 2: ``wav_hat [B, S]``.

        ``codebooks`` (stage 2 / evaluation): decode from the first ``codebooks`` codes only.
        """
        rvq = self.tokenizer.encoder.quantizer
        if stage == 2:
            with torch.no_grad():
                feats, flen = self.encode(wav, lengths)
                valid = valid_frames(flen, feats.shape[1])
                codes = rvq.encode(feats[valid].float())
                q = torch.zeros(*feats.shape, device=wav.device)
                q[valid] = rvq.decode(codes[:codebooks] if codebooks else codes)
            return {"wav_hat": self.decode(q, flen, wav.shape[1]).clone()}  # not a view (FSDP hooks)
        feats, flen = self.encode(wav, lengths)
        valid = valid_frames(flen, feats.shape[1])
        x = feats[valid].float()
        if codebooks:  # evaluation with fewer codebooks than trained
            codes = rvq.encode(x.detach())
            q, commit = rvq.decode(codes[:codebooks]), x.new_zeros(())
        else:
            q, _, commit, _ = self.quantizer(x, update=self.training, key=key)
        qfull = feats.new_zeros(*feats.shape, dtype=torch.float32).masked_scatter(valid[..., None], q)
        wav_hat = self.decode(qfull, flen, wav.shape[1])
        recon, _ = self.mel_loss(wav_hat, wav, lengths)
        out = {"recon": recon, "commit": torch.stack([commit])}  # fresh tensors, no views (FSDP)
        if self.a2t is not None:
            a2t, _ = self.a2t(qfull, flen, tokens or [None] * wav.shape[0])
            out["a2t"] = torch.stack([a2t])
        return out


class TokenizerTrainer(Trainer):
    kind = "tokenizer"
    throughput_unit = "audio s"

    cfg: TokenizerTrainConfig

    # ------------------------------------------------------------------ setup
    def build(self, fresh: bool) -> None:
        cfg, env = self.cfg, self.env
        if cfg.model.init:
            self.model_config = read_config(cfg.model.init)
            tok = AudioTokenizer.from_pretrained(cfg.model.init, max_seconds=None)
        elif cfg.model.config:
            self.model_config = json.loads(Path(cfg.model.config).read_text(encoding="utf-8"))
            tok = AudioTokenizer.from_config(self.model_config, seed=cfg.model.seed)
            tok.max_seconds = None
        else:
            raise ConfigError("model.init (a tokenizer folder) or model.config (a config.json) is required")
        tok.train().requires_grad_(True)
        stage1 = cfg.stage == 1
        self.text_tok = None
        a2t = None
        if stage1 and cfg.loss.a2t > 0:
            if not cfg.a2t.text_tokenizer:
                raise ConfigError(
                    "stage 1 with an A2T loss needs a2t.text_tokenizer (a folder with tokenizer.json)"
                )
            self.text_tok = TextTokenizer.from_dir(cfg.a2t.text_tokenizer)
            a2t = A2TDecoder(tok.config.d_model, self.text_tok.vocab_size, self.text_tok.eos_id, cfg.a2t)
        module = TokenizerTrainModule(tok, a2t, cfg.loss.mel_scales).to(env.device)
        self.groups = ("encoder", "decoder", "a2t") if a2t is not None else ("encoder", "decoder")
        if not stage1:
            self.groups = ("decoder",)  # encoder and quantizer frozen
        freeze_groups(module, cfg.optim, tokenizer_group, self.groups)
        if stage1:
            threshold = cfg.quantizer.threshold_ema_dead_code
            if threshold is None:
                threshold = tok.config.threshold_ema_dead_code
            module.quantizer = QuantizerTrainer(
                tok.encoder.quantizer, cfg.quantizer, threshold, env, cfg.run.seed
            )
            if fresh and cfg.quantizer.kmeans_init and not cfg.model.init:
                module.quantizer.reset_for_kmeans()
            if fresh and cfg.model.warm_start:
                self._warm_start(module, cfg.model.warm_start)
                if cfg.quantizer.reinit_codebooks:
                    module.quantizer.reset_for_kmeans()
        elif cfg.model.warm_start:
            raise ConfigError("model.warm_start is for stage 1 (stage 2 starts from model.init)")
        blocks = [*tok.encoder.layers, *tok.decoder.layers, *tok.decoder.vocoder.layers]
        if a2t is not None:
            blocks += list(a2t.model.layers)
        if cfg.distributed.grad_checkpointing:
            enable_checkpointing(blocks)
        self.module = wrap_model(module, env, blocks)
        optimizer = build_optimizer(unwrap(self.module), cfg.optim, tokenizer_group, self.groups)
        schedule = Schedule(cfg.optim, cfg.run.max_steps)
        self.units["model"] = OptimUnit(optimizer, self.module, schedule, cfg.optim.grad_clip)
        self.roots = {"train": self.module}
        self.disc = None
        if not stage1:
            d = cfg.discriminator
            self.disc = Discriminators(
                d.periods, d.mpd_channels, d.mpd_max_channels, d.stft_ffts, d.stft_channels
            )
            self.disc.to(env.device).train()
            params = list(self.disc.parameters())
            d_opt = torch.optim.AdamW(
                [{"params": params, "lr": d.lr, "base_lr": d.lr, "weight_decay": 0.0, "name": "disc"}],
                betas=d.betas,
                foreach=False,
            )
            self.units["disc"] = OptimUnit(
                d_opt, self.disc, Schedule(cfg.optim, cfg.run.max_steps), cfg.optim.grad_clip
            )
            self.roots["disc"] = self.disc
        if env.is_main:
            n = sum(p.numel() for p in module.parameters() if p.requires_grad)
            log.info(f"tokenizer stage {cfg.stage}: {n:,} trained parameters")
        self._build_data()
        if stage1:
            self._check_dead_code_threshold(module.quantizer.threshold)
        if stage1 and fresh and cfg.quantizer.kmeans_init_batches > 1:
            self._kmeans_init(cfg.quantizer.kmeans_init_batches)

    def _check_dead_code_threshold(self, threshold: float) -> None:
        """Warn when even uniformly used codes would fall below the dead-code threshold: their EMA
        usage is about (frames per batch) / (codebook size), and every code under the threshold is
        replaced by a random frame at every step, so the codebooks never settle."""
        d, tok = self.cfg.data, self.tokenizer
        frames = d.batch_size * d.segment_seconds * tok.frame_rate
        uniform = frames / max(tok.config.codebook_sizes)
        if self.env.is_main and threshold > 0 and uniform < 4 * threshold:
            log.warning(
                f"quantizer: threshold_ema_dead_code {threshold:g} is high for ~{frames:,.0f} frames per "
                f"batch (a uniformly used code of the largest codebook gets ~{uniform:.2f} per batch): "
                f"most codes will be replaced every step; set quantizer.threshold_ema_dead_code "
                f"to about {uniform / 50:.2g}"
            )

    @torch.no_grad()
    def _kmeans_init(self, batches: int) -> None:
        """k-means for the codebooks still uninitialised, on the encoder features of the first
        ``batches`` training batches (the ones steps 1…``batches`` will train on) instead of one."""
        inner = unwrap(self.module)
        if not inner.quantizer.uninitialised():
            return
        feats = []
        for step in range(1, batches + 1):
            for batch in self.load_step(step)[1]:
                batch = self._device(batch)
                f, flen = inner.encode(batch["wav"], batch["lengths"])
                valid = valid_frames(flen, f.shape[1])
                feats.append(f[valid].float())
        x = torch.cat(feats)
        done = inner.quantizer.init_codebooks(x)
        if self.env.is_main:
            log.info(f"k-means: {done} codebook(s) initialised on {x.shape[0]:,} frames of {batches} batches")

    def _warm_start(self, module: TokenizerTrainModule, source: str) -> None:
        """Copy the tensors of checkpoint ``source`` whose names and shapes match into ``module``."""
        path = resolve_checkpoint(source)
        own = module.state_dict()
        state = {}
        for part in ("tokenizer", "a2t"):
            if (part == "tokenizer" or module.a2t is not None) and (path / f"{part}.safetensors").is_file():
                state.update({f"{part}.{k}": v for k, v in read_weights(path, part).items()})
        # a codebook is taken whole (entries and EMA state) or not at all: one that changed size gets
        # inited = 0, so k-means initialises it on the first batch from the residuals of the others
        resized = {
            key.removesuffix("embed")
            for key, value in state.items()
            if key.endswith("_codebook.embed") and key in own and own[key].shape != value.shape
        }
        copied, skipped = 0, []
        with torch.no_grad():
            for key, value in state.items():
                if key.removesuffix(key.rpartition(".")[2]) in resized:
                    continue
                if key in own and own[key].shape == value.shape:
                    own[key].copy_(value)
                    copied += 1
                else:
                    skipped.append(key)
            for prefix in resized:
                own[prefix + "inited"].zero_()
        if self.env.is_main:
            if resized:
                log.info(f"warm start: {len(resized)} resized codebook(s) start again from k-means")
            more = f"; not copied (new shapes): {', '.join(skipped[:6])}" if skipped else ""
            more += f" (+{len(skipped) - 6} more)" if len(skipped) > 6 else ""
            log.info(f"warm start from {path}: {copied} tensors copied{more}")

    def _build_data(self) -> None:
        cfg, env = self.cfg, self.env
        d = cfg.data
        per_rank, rem = divmod(d.batch_size, env.world)
        if rem or per_rank % d.micro_batch_size:
            raise ConfigError(
                f"data.batch_size ({d.batch_size}) must split into {env.world} process(es) × "
                f"micro_batch_size ({d.micro_batch_size})"
            )
        sr = self.tokenizer.sample_rate
        segment = round(d.segment_seconds * sr)
        self.train_data = ClipDataset(d.train, sr, segment, cfg.run.seed)
        self.plan = BatchPlan(
            [1] * len(self.train_data),
            context=1,
            batch_rows=d.batch_size,
            seed=cfg.run.seed,
            shuffle=d.shuffle,
            pack=False,
        )
        self.eval_data = ClipDataset(d.eval, sr, segment, cfg.run.seed) if d.eval else None

    @property
    def tokenizer(self) -> AudioTokenizer:
        """The trained tokenizer (unwrapped)."""
        return unwrap(self.module).tokenizer

    # ------------------------------------------------------------------ batches and counts
    def _batch(self, data: ClipDataset, items: list[int], epoch: int) -> dict:
        """Crops of ``items`` (CPU): ``wav [B, S]``, ``lengths [B]``, transcript ``tokens``."""
        wavs, lengths, texts = zip(*(data.item(i, epoch) for i in items), strict=True)
        tokens = None
        if self.text_tok is not None:
            tokens = [None if t is None else self.text_tok.encode(t) for t in texts]
        return {"wav": torch.stack(wavs), "lengths": torch.tensor(lengths), "tokens": tokens}

    def _device(self, batch: dict) -> dict:
        dev = self.env.device
        return {**batch, "wav": batch["wav"].to(dev), "lengths": batch["lengths"].to(dev)}

    def _counts(self, batch: dict) -> dict[str, torch.Tensor]:
        """Element counts of each stage-1 loss term, known before the forward pass."""
        inner = unwrap(self.module)
        cfg = self.tokenizer.config
        lengths = batch["lengths"]
        frames = encoder_output_lengths(lengths // cfg.hop_length + 1, cfg).sum()
        counts = {
            "recon": inner.mel_loss.counts(lengths).to(self.env.device),
            "commit": (frames * cfg.d_model * cfg.num_quantizers).float().reshape(1).to(self.env.device),
        }
        if inner.a2t is not None:
            counts["a2t"] = torch.tensor([float(inner.a2t.count(batch["tokens"]))], device=self.env.device)
        return counts

    def _reduce_counts(self, batches: list[dict]) -> dict[str, torch.Tensor]:
        per = [self._counts(b) for b in batches]
        total = {k: sum(c[k] for c in per) for k in per[0]}
        flat = self.env.all_reduce_sum(torch.cat(list(total.values())))
        out, i = {}, 0
        for k, v in total.items():
            out[k] = flat[i : i + v.numel()]
            i += v.numel()
        return out

    @staticmethod
    def _mean(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return (sums / counts.clamp(min=1)).mean()

    # ------------------------------------------------------------------ steps
    def load_step(self, step: int) -> tuple[int, list[dict]]:
        epoch, rows = self.plan.batch(step)
        mine = rank_slice([r[0] for r in rows], self.env.rank, self.env.world)
        micros = micro_batches(mine, self.cfg.data.micro_batch_size)
        return epoch, [self._batch(self.train_data, m, epoch) for m in micros]

    def train_step(self, step: int, data) -> tuple[dict[str, float], float]:
        epoch, batches = data
        batches = [self._device(b) for b in batches]
        metrics = self._stage1(step, batches) if self.cfg.stage == 1 else self._stage2(step, batches)
        metrics["epoch"] = float(epoch)
        seconds = sum(float(b["lengths"].sum()) for b in batches) / self.tokenizer.sample_rate
        return metrics, seconds

    def _stage1(self, step: int, batches: list[dict]) -> dict[str, float]:
        env, w = self.env, self.cfg.loss
        weights = {"a2t": w.a2t, "recon": w.recon, "commit": w.commit}
        counts = self._reduce_counts(batches)
        totals = {k: torch.zeros_like(v) for k, v in counts.items()}
        for i, batch in enumerate(batches):
            with no_sync(self.module, i < len(batches) - 1), env.autocast():
                sums = self.module(batch["wav"], batch["lengths"], batch["tokens"], stage=1, key=(step, i))
                loss = sum(weights[k] * self._mean(sums[k], counts[k]) for k in sums) * env.world
            loss.backward()
            for k in sums:
                totals[k] += sums[k].detach().float()
        flat = env.all_reduce_sum(torch.cat([totals[k] for k in counts]))
        metrics, i = {}, 0
        total = 0.0
        for k, v in counts.items():
            value = float(self._mean(flat[i : i + v.numel()], v))
            metrics[f"loss/{k}"] = value
            total += weights[k] * value
            i += v.numel()
        metrics["loss"] = total
        metrics["grad_norm"] = self.optimizer_step("model", step)
        metrics["lr"] = max(g["lr"] for g in self.units["model"].optimizer.param_groups)
        return metrics

    def _stage2(self, step: int, batches: list[dict]) -> dict[str, float]:
        env, w, disc = self.env, self.cfg.loss, self.disc
        counts = self._reduce_counts(batches)["recon"]
        n_micro = len(batches) * env.world
        acc = torch.zeros(4, device=env.device)  # recon sums are per scale; the rest are per-micro means
        recon_sums = torch.zeros_like(counts)
        for i, batch in enumerate(batches):
            wav, lengths = batch["wav"], batch["lengths"]
            with no_sync(self.module, i < len(batches) - 1), env.autocast():
                wav_hat = self.module(wav, lengths, stage=2, codebooks=self.cfg.decode_codebooks)["wav_hat"]
                real = disc(wav)
                d_loss = hinge_d_loss(real, disc(wav_hat.detach()))
            (d_loss / len(batches)).backward()
            disc.requires_grad_(False)
            try:
                with no_sync(self.module, i < len(batches) - 1), env.autocast():
                    fake = disc(wav_hat)
                    adv, fm = hinge_g_loss(fake), feature_matching_loss(real, fake)
                    recon, _ = unwrap(self.module).mel_loss(wav_hat, wav, lengths)
                    g_loss = (
                        w.recon * self._mean(recon, counts) * env.world
                        + (w.adv * adv + w.fm * fm) * env.world / n_micro
                    )
                g_loss.backward()
            finally:
                disc.requires_grad_(True)
            recon_sums += recon.detach().float()
            acc += torch.stack(
                [adv.detach(), fm.detach(), d_loss.detach(), torch.zeros((), device=env.device)]
            )
        env.all_reduce_sum(recon_sums)
        env.all_reduce_sum(acc)
        all_reduce_grads(disc.parameters(), env)
        adv, fm, d = (acc[:3] / n_micro).tolist()
        recon = float(self._mean(recon_sums, counts))
        metrics = {
            "loss": w.recon * recon + w.adv * adv + w.fm * fm,
            "loss/recon": recon,
            "loss/adv": adv,
            "loss/fm": fm,
            "loss/disc": d,
        }
        metrics["grad_norm"] = self.optimizer_step("model", step)
        metrics["disc_grad_norm"] = self.optimizer_step("disc", step)
        metrics["lr"] = max(g["lr"] for g in self.units["model"].optimizer.param_groups)
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Reconstruction (mel L1) with the trained codebooks and with the first 8; stage 1 also A2T."""
        if self.eval_data is None:
            return {}
        env, inner = self.env, unwrap(self.module)
        per = -(-len(self.eval_data) // env.world)
        mine = list(range(len(self.eval_data)))[env.rank * per : (env.rank + 1) * per]
        mb = self.cfg.data.micro_batch_size
        chunks = [mine[i : i + mb] for i in range(0, len(mine), mb)][: self.cfg.run.eval_batches]
        n_q = min(EVAL_CODEBOOKS, self.tokenizer.num_quantizers)
        scales = len(inner.mel_loss.scales)
        # sums and counts: recon [S], recon_8cb [S], a2t [1]
        acc = torch.zeros(2, 2 * scales + 1, device=env.device)
        inner.eval()
        try:
            for chunk in chunks:
                batch = self._device(self._batch(self.eval_data, chunk, 0))
                counts = self._counts(batch)
                wav, lengths = batch["wav"], batch["lengths"]
                if self.cfg.stage == 1:
                    full = inner(wav, lengths, batch["tokens"], stage=1)
                    few = inner(wav, lengths, batch["tokens"], stage=1, codebooks=n_q)
                    recon, recon8 = full["recon"], few["recon"]
                    if "a2t" in full:
                        acc[:, -1] += torch.cat([full["a2t"], counts["a2t"]])
                else:
                    outs = [
                        inner(wav, lengths, stage=2, codebooks=k)["wav_hat"]
                        for k in (self.cfg.decode_codebooks, n_q)
                    ]
                    recon, recon8 = (inner.mel_loss(o, wav, lengths)[0] for o in outs)
                acc[0, : 2 * scales] += torch.cat([recon, recon8]).float()
                acc[1, : 2 * scales] += counts["recon"].repeat(2)
        finally:
            inner.train()
        env.all_reduce_sum(acc)
        out = {
            "eval/recon": float(self._mean(acc[0, :scales], acc[1, :scales])),
            f"eval/recon_{n_q}cb": float(
                self._mean(acc[0, scales : 2 * scales], acc[1, scales : 2 * scales])
            ),
        }
        if acc[1, -1] > 0:
            out["eval/a2t"] = float(acc[0, -1] / acc[1, -1])
        return out

    # ------------------------------------------------------------------ checkpoint contents
    def data_position(self, step: int) -> dict[str, int]:
        epoch, batch = self.plan.locate(step)
        return {"epoch": epoch, "batch_in_epoch": batch}

    def model_files(self) -> dict:
        return {"config.json": self.model_config}

    def meta(self) -> dict:
        return {"stage": self.cfg.stage}
