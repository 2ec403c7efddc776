"""Representation Misdirection for Unlearning (RMU).

Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", ICML 2024
(arXiv:2403.03218), section 5. At one decoder layer ``l`` the hidden states of forget tokens are
pushed towards a fixed random direction scaled by ``c``, while those of retain tokens are kept
equal to the frozen original model's::

    L = E_forget ||h_theta^l(x) - c * u||^2 + alpha * E_retain ||h_theta^l(x) - h_frozen^l(x)||^2

``u`` is a random unit vector (drawn once, seeded; uniform [0, 1) entries normalised, as in the
WMDP code); ``alpha`` is ``retain_weight``. Only a few parameters train: in the paper the MLP
down-projection weights of layers ``l-2, l-1, l`` (Zephyr-7B: ``l = 7``, ``c = 6.5``,
``alpha = 1200``, learning rate 5e-5). With LoRA, the adapters of those same modules train and
the frozen activations come from the same module with adapters disabled.

The objective is on activations, not likelihood: the model's next-token predictions on forget
text degrade as a consequence of the scrambled middle-layer representation.

The WMDP code unlearns several corpora at once (bio and cyber) with one random direction per
corpus. With ``direction_per_part`` a forget source with several ``parts`` does the same: each
training window carries the index ``k`` of the part it came from and is steered to ``c * u_k``
(``u_0`` is the single-direction ``u``; ``u_k`` is drawn with seed ``seed + k``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..losses import activation_mse
from ..models import eval_mode, model_inputs
from ..validation import check_number
from .base import UnlearningModule


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers of a transformers causal LM (``model.model.layers`` for Llama)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}: expected a ModuleList "
        "'model.layers' or one of length config.num_hidden_layers"
    )


def steering_vector(hidden_size: int, *, coefficient: float, seed: int) -> Tensor:
    """``c * u`` with ``u`` a random unit vector (uniform [0, 1) entries normalised, seeded)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=generator)
    return coefficient * u / u.norm()


class RepresentationMisdirection(UnlearningModule):
    """RMU: steer one layer's forget activations to ``c * u``, keep retain activations.

    Args:
        layer: index of the decoder layer whose output is steered (paper, Zephyr-7B: 7).
        steering_coefficient: ``c``, the norm of the target activation (paper, Zephyr-7B: 6.5;
            larger models need larger values).
        trainable_layers: indices of the decoder layers whose ``trainable_modules`` train;
            default ``[layer - 2, layer - 1, layer]`` (those that exist), as in the paper.
        trainable_modules: names, relative to a decoder layer, of the submodules whose
            parameters train (paper: ``mlp.down_proj``). With LoRA these must be among the
            adapted modules; their adapters train.
        retain_weight: ``alpha``, the weight of the retain term (paper, Zephyr-7B: 1200).
        seed: seed of the random direction ``u``.
        direction_per_part: steer the windows of each part of a forget source with ``parts`` to a
            direction of their own (the WMDP code: one per corpus); batches without ``part``
            use ``u``.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        layer: int = 7,
        steering_coefficient: float = 6.5,
        trainable_layers: list[int] | None = None,
        trainable_modules: list[str] | None = None,
        retain_weight: float = 1200.0,
        seed: int = 0,
        direction_per_part: bool = False,
        **kwargs,
    ) -> None:
        if layer < 0:
            raise ValueError(f"layer must be a decoder layer index >= 0, got {layer}")
        check_number("steering_coefficient", steering_coefficient, low=0, strict=True)
        if kwargs.get("retain_term", "none") != "none":
            raise ValueError(
                "RMU's retain term is its own (the frozen model's activations at `layer`, weighted "
                f"by retain_weight); retain_term={kwargs['retain_term']!r} does not apply to it"
            )
        super().__init__(model_name_or_path, retain_weight=retain_weight, **kwargs)
        self.layer = int(layer)
        self.steering_coefficient = float(steering_coefficient)
        if trainable_layers is None:
            trainable_layers = [i for i in (layer - 2, layer - 1, layer) if i >= 0]
        self.trainable_layers = [int(i) for i in trainable_layers]
        self.trainable_modules = list(trainable_modules or ["mlp.down_proj"])
        self.seed = int(seed)
        self.direction_per_part = bool(direction_per_part)
        self._part_directions: dict[int, Tensor] = {}
        # c * u, set in configure_model once the hidden size is known
        self.register_buffer("steering", None, persistent=False)

    # ------------------------------------------------------------------ what the run needs
    @property
    def uses_retain(self) -> bool:
        """RMU always keeps retain activations in place: it trains on retain batches."""
        return True

    @property
    def needs_reference(self) -> bool:
        """The retain term compares with the frozen model's activations (with LoRA: the base with
        adapters disabled)."""
        return True

    # ------------------------------------------------------------------ model set-up
    def configure_model(self) -> None:
        built = self.model is not None
        super().configure_model()
        if built:
            return
        layers = decoder_layers(self.hf_model)
        bad = [i for i in [self.layer, *self.trainable_layers] if not 0 <= i < len(layers)]
        if bad:
            raise ValueError(
                f"RMU layer indices {bad} do not exist: {type(self.hf_model).__name__} has "
                f"{len(layers)} decoder layers (0..{len(layers) - 1}); set layer/trainable_layers"
            )
        self._select_trainable(layers)
        hidden = self.hf_model.config.hidden_size
        self.steering = steering_vector(
            hidden, coefficient=self.steering_coefficient, seed=self.seed
        )

    def _select_trainable(self, layers: nn.ModuleList) -> None:
        chosen: list[str] = []
        for p in self.model.parameters():
            p.requires_grad_(False)
        for i in self.trainable_layers:
            for name, param in layers[i].named_parameters():
                in_module = any(name.startswith(m + ".") for m in self.trainable_modules)
                if in_module and (self.lora is None or "lora_" in name):
                    param.requires_grad_(True)
                    chosen.append(f"layers.{i}.{name}")
        if not chosen:
            hint = (
                f"; with LoRA add them to lora.target_modules (now {self.lora.target_modules})"
                if self.lora is not None
                else ""
            )
            raise ValueError(
                f"RMU found no parameters of modules {self.trainable_modules} in layers "
                f"{self.trainable_layers}{hint}"
            )
        self.trainable_parameter_names = chosen

    # ------------------------------------------------------------------ activations
    def _activations(self, model: nn.Module, layer: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        captured: list[Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        handle = layer.register_forward_hook(hook)
        try:
            inputs = model_inputs(batch)
            # only the hidden states matter: skip the full-vocabulary logits
            model(**inputs, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        return captured[-1]

    def activations(self, batch: dict[str, Tensor]) -> Tensor:
        """Hidden states ``[batch, seq, hidden]`` of the trained model at ``layer``."""
        self._require_model()
        return self._activations(self.model, decoder_layers(self.hf_model)[self.layer], batch)

    @torch.no_grad()
    def reference_activations(self, batch: dict[str, Tensor]) -> Tensor:
        """Hidden states of the frozen original at ``layer`` (with LoRA: adapters disabled, in eval
        mode, the modes restored after)."""
        self._require_model()
        if self.lora is not None:
            layer = decoder_layers(self.hf_model)[self.layer]
            with self.model.disable_adapter(), eval_mode(self.model):
                return self._activations(self.model, layer, batch)
        return self._activations(self.reference, decoder_layers(self.reference)[self.layer], batch)

    # ------------------------------------------------------------------ the terms
    def steering_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """``c * u`` (``[hidden]``), or with ``direction_per_part`` and a batch that carries
        ``part``, each row's ``c * u_part`` (``[batch, 1, hidden]``)."""
        if not self.direction_per_part or "part" not in batch:
            return self.steering
        rows = []
        for k in batch["part"].tolist():
            if k not in self._part_directions:
                self._part_directions[k] = steering_vector(
                    self.steering.numel(), coefficient=self.steering_coefficient, seed=self.seed + k
                )
            rows.append(self._part_directions[k])
        return torch.stack(rows).to(self.steering.device)[:, None, :]

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        acts = self.activations(batch)
        target = self.steering_targets(batch).to(acts.device, acts.dtype)
        return activation_mse(acts, target, batch.get("attention_mask"))

    def retain_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return activation_mse(
            self.activations(batch), self.reference_activations(batch), batch.get("attention_mask")
        )
