"""LM training (technical report stages 1–2, SFT, LoRA): teacher-forced text and patch-decoder losses.

Parameter groups with their own learning rates: ``patch_encoder`` (speech embeddings, input local
transformer, group down-cast), ``backbone`` (token embeddings, Qwen2 layers, final norm, text head)
and ``patch_decoder`` (local transformer, its heads, hidden-state down-cast). Stage 1 (text-only loss
weights) freezes the patch decoder and never runs it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import read_config
from ..lm.config import LMConfig
from ..lm.model import MimoAudioLM, load_lm, random_lm
from ..lm.patch_decoder import teacher_forced_logits
from ..lm.patch_encoder import encode_speech_patches
from ..prompts import PromptBuilder
from ..text_tokenizer import TextTokenizer
from .config import ConfigError, LMTrainConfig
from .data import BatchPlan, CodeResolver, micro_batches, open_sources, rank_slice
from .distributed import broadcast_full_state, enable_checkpointing, no_sync, unwrap, wrap_model
from .lm_data import IGNORE, LMDataset, SequenceBuilder, undelay_targets
from .lm_losses import chunked_cross_entropy, codebook_loss_sums, target_counts, weighted_total
from .lora import apply_lora
from .optim import Schedule, build_optimizer, freeze_groups
from .trainer import OptimUnit, Trainer

log = logging.getLogger("mimo_audio.train")

GROUPS = ("patch_encoder", "backbone", "patch_decoder")
PATCH_ENCODER = ("speech_embeddings.", "input_local_transformer.", "speech_group_downcast.")
PATCH_DECODER = (
    "local_transformer.",
    "local_transformer_lm_heads.",
    "hidden_states_downcast.",
    "speech_embeddings_to_local.",
)
TEXT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MODEL_FILES = ("generation_config.json",)


def lm_group(name: str) -> str:
    """Learning-rate group of an LM parameter (with or without the ``lm.`` prefix)."""
    name = name.removeprefix("lm.")
    if name.startswith(PATCH_ENCODER):
        return "patch_encoder"
    if name.startswith(PATCH_DECODER):
        return "patch_decoder"
    return "backbone"


def attention_mask(doc: torch.Tensor) -> torch.Tensor:
    """Causal attention within each packed example: ``doc [B, L]`` → bool ``[B, 1, L, L]``."""
    L = doc.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def embed(lm: MimoAudioLM, text: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
    """:meth:`MimoAudioLM.embed` (SPEC §7.2) that also works under autocast and always runs the patch
    encoder (on one all-empty patch, weighted 0, when the batch has no speech), so every process uses
    the same modules in every step (DDP / FSDP)."""
    B, P = text.shape
    is_speech = text == lm.empty_text_id
    keep_text = (~is_speech) & (text >= 0)
    x = lm.model.embed_tokens(text.clamp(min=0)) * keep_text[..., None]
    idx = is_speech.reshape(-1).nonzero().squeeze(-1)
    if idx.numel() == 0:
        dummy = lm.empty_ids(text.device).expand(1, lm.config.group_size, -1)
        return x + 0.0 * encode_speech_patches(lm, dummy).sum().to(x.dtype)
    enc = encode_speech_patches(lm, speech.reshape(B * P, *speech.shape[2:])[idx])
    return x.reshape(B * P, -1).index_add(0, idx, enc.to(x.dtype)).reshape(B, P, -1)


class LMTrainModule(nn.Module):
    """The LM plus its training forward: ``forward(batch) → loss sums [1 + C]`` (text, codebooks)."""

    def __init__(self, lm: MimoAudioLM, speech_loss: bool) -> None:
        super().__init__()
        self.lm = lm
        self.speech_loss = speech_loss

    def forward(
        self,
        ids: torch.Tensor,  # [B, 1+C, G·L]
        positions: torch.Tensor,  # [B, L]
        doc: torch.Tensor,  # [B, L]
        text_targets: torch.Tensor,  # [B, L]
        speech_targets: torch.Tensor,  # [B, L, G + max(delay), C] delayed
    ) -> torch.Tensor:
        lm = self.lm
        cfg = lm.config
        text, speech = lm.split_ids(ids)
        x = embed(lm, text, speech)
        if bool((doc == 0).all()):
            h = lm.model(x)
        else:
            h = lm.model(x, positions, attn_mask=attention_mask(doc))
        B, L = text.shape
        flat = h.reshape(B * L, -1)
        tt = text_targets.reshape(-1)
        sel = (tt != IGNORE).nonzero().squeeze(-1)
        if sel.numel() == 0:
            sel = sel.new_zeros(1)
        sums = [chunked_cross_entropy(flat[sel], lm.lm_head.weight, tt[sel])]
        if self.speech_loss:
            T = speech_targets.shape[2]
            st = speech_targets.reshape(B * L, T, -1)
            rows = (st != IGNORE).flatten(1).any(1).nonzero().squeeze(-1)
            if rows.numel() == 0:  # run the patch decoder anyway (its targets are all ignored)
                rows = rows.new_zeros(1)
            delayed = st[rows]
            frames = undelay_targets(delayed, cfg.delay_pattern, cfg.group_size)
            empty = lm.empty_ids(ids.device)
            frames = torch.where(frames == IGNORE, empty, frames)
            logits = teacher_forced_logits(lm, lm.hidden_states_downcast(flat[rows]), frames)
            sums.append(codebook_loss_sums(logits, delayed, cfg.delay_pattern))
        else:
            sums.append(flat.new_zeros(cfg.audio_channels, dtype=torch.float32))
        return torch.cat([sums[0][None], sums[1]])


class LMTrainer(Trainer):
    kind = "lm"
    throughput_unit = "patch"

    cfg: LMTrainConfig

    # ------------------------------------------------------------------ setup
    def build(self, fresh: bool) -> None:
        cfg, env = self.cfg, self.env
        init = cfg.model.init
        tok_dir = cfg.model.text_tokenizer or init
        if tok_dir is None:
            raise ConfigError("model.text_tokenizer (or model.init) must name a folder with tokenizer.json")
        self.text_dir = Path(tok_dir)
        self.text_tok = TextTokenizer.from_dir(self.text_dir)
        empty_text = self.text_tok.id("<|empty|>")
        # FSDP over several processes: only rank 0 materialises the weights; the others build on the
        # meta device and receive their shards from rank 0 after sharding (one CPU copy in total).
        sharded_init = env.strategy == "fsdp" and env.distributed
        on_meta = sharded_init and not env.is_main
        if init:
            self.model_config = read_config(init)
        elif cfg.model.config:
            self.model_config = json.loads(Path(cfg.model.config).read_text(encoding="utf-8"))
        else:
            raise ConfigError("model.init (a checkpoint folder) or model.config (a config.json) is required")
        if on_meta:
            with torch.device("meta"):
                lm = MimoAudioLM(LMConfig.from_dict(self.model_config), empty_text)
            if lm.config.tie_word_embeddings:
                lm.lm_head.weight = lm.model.embed_tokens.weight
        elif init:
            lm = load_lm(init, "cpu", torch.float32, optimize=False, empty_text_id=empty_text)
        else:
            lm = random_lm(LMConfig.from_dict(self.model_config), empty_text, seed=cfg.model.seed)
        lm.train().requires_grad_(True)
        lmc = lm.config
        self.lm_config = lmc
        self.weights = torch.tensor(cfg.loss.parsed(lmc.audio_channels))
        speech_loss = bool(self.weights[1:].any())
        self.lora = cfg.lora.rank > 0
        if self.lora:
            n = apply_lora(lm.model, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
            if n == 0:
                raise ConfigError(f"lora.targets {cfg.lora.targets} match no linear layer of the backbone")
        module = LMTrainModule(lm, speech_loss)
        full_state = module.state_dict() if sharded_init and env.is_main else None
        if not sharded_init:
            module.to(env.device)  # fully_shard places the shards itself
        freeze_groups(module, cfg.optim, lm_group, GROUPS)
        for name, p in module.named_parameters():
            if not speech_loss and lm_group(name) == "patch_decoder":
                p.requires_grad_(False)  # text-only stage: the patch decoder never runs
            if self.lora and lm_group(name) == "backbone" and "lora_" not in name:
                p.requires_grad_(False)
        stacks = (lm.model, lm.input_local_transformer, lm.local_transformer)
        layers = [layer for stack in stacks for layer in stack.layers]
        if cfg.distributed.grad_checkpointing:
            enable_checkpointing(layers)
        self.module = wrap_model(module, env, layers)
        if sharded_init:
            broadcast_full_state(self.module, env, full_state)
        optimizer = build_optimizer(unwrap(self.module), cfg.optim, lm_group, GROUPS)
        self.units["lm"] = OptimUnit(
            optimizer, self.module, Schedule(cfg.optim, cfg.run.max_steps), cfg.optim.grad_clip
        )
        self.roots = {"train": self.module}
        if env.is_main:
            total = sum(p.numel() for p in lm.parameters())
            trained = sum(p.numel() for p in lm.parameters() if p.requires_grad)
            log.info(f"LM: {total:,} parameters, {trained:,} trained")
        self._build_data()

    def _build_data(self) -> None:
        cfg, env, lmc = self.cfg, self.env, self.lm_config
        d = cfg.data
        per_rank, rem = divmod(d.batch_rows, env.world)
        if rem or per_rank % d.micro_rows:
            raise ConfigError(
                f"data.batch_rows ({d.batch_rows}) must split into {env.world} process(es) × micro_rows ({d.micro_rows})"
            )
        audio_tok = None
        if d.audio_tokenizer:
            from ..tokenizer import AudioTokenizer

            audio_tok = AudioTokenizer.from_pretrained(d.audio_tokenizer)
        prompts = PromptBuilder(self.text_tok, lmc.speech_zeroemb_idx, lmc.group_size)
        builder = SequenceBuilder(prompts, self.text_tok, d.loss_on, aligned_tts=d.tts_alignment)
        resolver = CodeResolver(lmc.audio_channels, lmc.group_size, audio_tok)

        def dataset(paths, speech_noise=0.0, cache=False):
            return LMDataset(
                open_sources(paths),
                builder,
                resolver,
                seed=cfg.run.seed,
                empty_text_id=self.text_tok.id("<|empty|>"),
                empty_ids=lmc.speech_zeroemb_idx,
                delays=lmc.delay_pattern,
                cache_dir=Path(cfg.run.out_dir) / "cache",  # example lengths, for the next start
                speech_noise=speech_noise,
                cache_examples=cache,
            )

        self.train_data = dataset(d.train, d.speech_input_noise, d.cache_examples)
        self.plan = BatchPlan(
            self.train_data.lengths,
            context=d.context_length,
            batch_rows=d.batch_rows,
            seed=cfg.run.seed,
            shuffle=d.shuffle,
            pack=d.pack,
        )
        self.eval_data = self.eval_plan = None
        if d.eval:
            self.eval_data = dataset(d.eval)
            # one fixed shuffle (epoch 0 of the run's seed): every evaluation scores the same
            # ``eval_batches`` batches, drawn across the whole eval set rather than its first records
            # (manifests are often grouped by task, so its head may hold no speech targets at all)
            self.eval_plan = BatchPlan(
                self.eval_data.lengths,
                context=d.context_length,
                batch_rows=env.world * d.micro_rows,
                seed=cfg.run.seed,
                shuffle=True,
                pack=d.pack,
            )

    # ------------------------------------------------------------------ steps
    def _row_length(self, data: LMDataset, rows: list[list[int]]) -> int:
        d = self.cfg.data
        if d.pack:
            return d.context_length
        return max(min(data.lengths[i], d.context_length) for row in rows for i in row)

    def _batches(self, data: LMDataset, rows: list[list[int]]) -> list[dict[str, torch.Tensor]]:
        """This process's micro-batches of a global batch (CPU tensors)."""
        mine = rank_slice(rows, self.env.rank, self.env.world)
        return [
            data.collate(micro, self._row_length(data, micro))
            for micro in micro_batches(mine, self.cfg.data.micro_rows)
        ]

    def _device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()}

    def load_step(self, step: int) -> tuple[int, list[dict[str, torch.Tensor]]]:
        epoch, rows = self.plan.batch(step)
        return epoch, self._batches(self.train_data, rows)

    def _metrics(self, sums: torch.Tensor, counts: torch.Tensor, prefix: str = "") -> dict[str, float]:
        names = ["text"] + [f"cb{c}" for c in range(self.lm_config.audio_channels)]
        out = {f"{prefix}loss": float(weighted_total(sums, counts, self.weights))}
        for i, name in enumerate(names):
            out[f"{prefix}loss/{name}"] = float(sums[i] / counts[i]) if counts[i] > 0 else float("nan")
        return out

    def train_step(self, step: int, data) -> tuple[dict[str, float], float]:
        env = self.env
        epoch, batches = data
        batches = [self._device(b) for b in batches]
        counts = sum(target_counts(b["text_targets"], b["speech_targets"]) for b in batches)
        counts = env.all_reduce_sum(counts.to(env.device))
        weights = self.weights.to(env.device)
        total = torch.zeros(1 + self.lm_config.audio_channels, device=env.device)
        for i, batch in enumerate(batches):
            with no_sync(self.module, i < len(batches) - 1), env.autocast():
                sums = self.module(**batch)
                loss = weighted_total(sums, counts, weights, scale=env.world)
            loss.backward()
            total += sums.detach().float()
        env.all_reduce_sum(total)
        norm = self.optimizer_step("lm", step)
        metrics = self._metrics(total.cpu(), counts.cpu())
        optimizer = self.units["lm"].optimizer
        lrs = {g["name"].split(".")[0]: g["lr"] for g in optimizer.param_groups}
        metrics.update({f"lr/{k}": v for k, v in lrs.items()})
        metrics.update(lr=max(lrs.values()), grad_norm=norm, epoch=float(epoch))
        patches = sum(int((b["doc"] >= 0).sum()) for b in batches)
        return metrics, float(patches)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.eval_data is None:
            return {}
        env = self.env
        steps = min(self.cfg.run.eval_batches, self.eval_plan.steps_in_epoch(0))
        total = torch.zeros(1 + self.lm_config.audio_channels, device=env.device)
        counts = torch.zeros_like(total)
        self.module.eval()
        try:
            for s in range(steps):
                for batch in map(self._device, self._batches(self.eval_data, self.eval_plan.batch(s)[1])):
                    with env.autocast():
                        total += self.module(**batch).float()
                    counts += target_counts(batch["text_targets"], batch["speech_targets"]).to(env.device)
        finally:
            self.module.train()
        env.all_reduce_sum(total)
        env.all_reduce_sum(counts)
        return self._metrics(total.cpu(), counts.cpu(), prefix="eval/")

    # ------------------------------------------------------------------ checkpoint contents
    def data_position(self, step: int) -> dict[str, int]:
        epoch, batch = self.plan.locate(step)
        return {"epoch": epoch, "batch_in_epoch": batch}

    def model_files(self) -> dict[str, Path | str | dict]:
        files: dict[str, Path | str | dict] = {"config.json": self.model_config}
        for name in TEXT_TOKENIZER_FILES:
            if (self.text_dir / name).is_file():
                files[name] = self.text_dir / name
        if self.cfg.model.init:
            for name in MODEL_FILES:
                if (Path(self.cfg.model.init) / name).is_file():
                    files[name] = Path(self.cfg.model.init) / name
        return files

    def meta(self) -> dict:
        lora = self.cfg.lora
        return {"lora": {"rank": lora.rank, "alpha": lora.alpha} if self.lora else None}

    # ------------------------------------------------------------------ access
    @property
    def lm(self) -> MimoAudioLM:
        """The trained LM (unwrapped; LoRA layers still separate)."""
        return unwrap(self.module).lm
