"""A TopK sparse autoencoder over one layer's token activations, and the arithmetic of one training step.

TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") rather than ReLU + L1: the number of active
latents per token (L0) is K by construction, so there is no L1 coefficient to tune against reconstruction, and no
L1 shrinkage pulling every active latent's value towards zero. The usual care:

- activations are scaled by one number (`scale`) to unit mean squared norm, so learning rates and losses mean
  the same at every layer and model;
- a pre-encoder bias (`b_pre`, subtracted before encoding and added back after decoding), started at the mean;
- decoder rows (one per latent: its direction in activation space) kept at unit norm, their gradient's
  component along the row removed before each step;
- a latent that has not fired for `dead_after` tokens is dead; the auxiliary loss (AuxK) asks the top `aux_k`
  dead latents to reconstruct what the live ones miss, which brings them back.
"""

from __future__ import annotations

import torch
from torch import nn

AUX_COEFFICIENT = 1 / 32  # Gao et al.'s weight of the AuxK loss


class SparseAutoencoder(nn.Module):
    """x [.., width] (raw activations) -> K of `latents` codes -> x_hat [.., width]; `scale` maps raw to normalized."""

    def __init__(self, width: int, latents: int, k: int, *, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        decoder = torch.randn(latents, width, generator=generator)
        decoder = decoder / decoder.norm(dim=1, keepdim=True)
        self.k = int(k)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.T.clone())  # encoder starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(latents))
        self.b_pre = nn.Parameter(torch.zeros(width))
        self.register_buffer("scale", torch.ones(()))

    @property
    def width(self) -> int:
        return self.W_dec.shape[1]

    @property
    def latents(self) -> int:
        return self.W_dec.shape[0]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """What each latent's encoder reads before the TopK: linear in x, so it has a gradient everywhere (what the
        `sae` objective maximizes) and the mean over tokens is the pre-activation of the mean token."""
        return (x.to(self.W_enc.dtype) * self.scale - self.b_pre) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse codes [.., latents]: the K largest pre-activations (ReLU'd), every other latent zero."""
        return self.topk(self.pre_activations(x), self.k)

    @staticmethod
    def topk(pre: torch.Tensor, k: int) -> torch.Tensor:
        values, indices = pre.topk(min(k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def decode_normalized(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_pre

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x_hat in x's own units (the normalization undone), to splice back into the model."""
        return (self.decode_normalized(self.encode(x)) / self.scale).to(x.dtype)

    @torch.no_grad()
    def start_from(self, sample: torch.Tensor) -> None:
        """Normalization and pre-encoder bias from a first sample of raw activations [N, width]."""
        sample = sample.float()
        self.scale.fill_(float(sample.pow(2).sum(1).mean().rsqrt()))
        self.b_pre.copy_((sample * self.scale).mean(0))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def drop_parallel_gradient(self) -> None:
        """Remove the part of each decoder row's gradient along the row: a step then turns rows, not stretch them."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
            self.W_dec.grad.sub_(along * self.W_dec)


class SaeTrainer:
    """Adam on normalized MSE + AuxK, the decoder kept at unit norm, and each latent's tokens since it last fired."""

    def __init__(self, sae: SparseAutoencoder, *, lr: float = 1e-3, dead_after: int = 50_000, aux_k: int | None = None):
        self.sae = sae
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
        self.dead_after = int(dead_after)
        self.aux_k = int(aux_k or max(1, sae.width // 2))
        self.since_fired = torch.zeros(sae.latents, dtype=torch.long)
        self.steps = 0
        self.tokens = 0

    def dead(self) -> torch.Tensor:
        """Latents that have not fired for `dead_after` tokens (bool [latents])."""
        return self.since_fired > self.dead_after

    def step(self, raw: torch.Tensor) -> dict:
        """One optimizer step on a batch of raw activations [N, width]; returns its loss, FVE and L0."""
        sae = self.sae
        x = raw.float() * sae.scale
        pre = sae.pre_activations(raw)
        codes = sae.topk(pre, sae.k)
        x_hat = sae.decode_normalized(codes)
        error = x - x_hat
        variance = (x - x.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
        mse = error.pow(2).sum(1).mean() / variance
        loss = mse
        dead = self.dead()
        if dead.any():  # AuxK: the dead latents' best K_aux reconstruct the residual error
            aux_codes = sae.topk(pre.masked_fill(~dead, float("-inf")), min(self.aux_k, int(dead.sum())))
            aux_codes = torch.nan_to_num(aux_codes, neginf=0.0)
            residual = error.detach()
            aux_error = (residual - aux_codes @ sae.W_dec).pow(2).sum(1).mean()
            aux = aux_error / residual.pow(2).sum(1).mean().clamp_min(1e-12)
            loss = loss + AUX_COEFFICIENT * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.drop_parallel_gradient()
        self.optimizer.step()
        sae.normalize_decoder()
        fired = (codes > 0).any(0)
        self.since_fired += raw.shape[0]
        self.since_fired[fired] = 0
        self.steps += 1
        self.tokens += raw.shape[0]
        return {"loss": float(loss.detach()), "fve": 1.0 - float(mse.detach()), "l0": float((codes > 0).sum(1).float().mean())}

    def state_dict(self) -> dict:
        return {"sae": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "since_fired": self.since_fired, "steps": self.steps, "tokens": self.tokens}

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.since_fired = state["since_fired"]
        self.steps, self.tokens = int(state["steps"]), int(state["tokens"])


def sae_arrays(sae: SparseAutoencoder) -> dict:
    """The weights as numpy arrays, by name (what `sae.safetensors` holds)."""
    return {name: tensor.detach().cpu().float().numpy() for name, tensor in sae.state_dict().items()}


def sae_from_arrays(arrays: dict, k: int) -> SparseAutoencoder:
    latents, width = arrays["W_dec"].shape
    sae = SparseAutoencoder(width, latents, k)
    sae.load_state_dict({name: torch.as_tensor(value) for name, value in arrays.items()})
    return sae.eval().requires_grad_(False)
