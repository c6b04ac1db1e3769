"""Language-model layer indices parsed from adapter parameter names."""

from __future__ import annotations

# Module-name segments that mark a vision/audio/projector sub-model: a ``layers.<i>`` found
# after one of them is not a language-model layer.
_NON_LM_SEGMENTS = frozenset(
    {
        "vision_tower",
        "vision_model",
        "vision_encoder",
        "vision",
        "visual",
        "vpm",
        "vit",
        "image_encoder",
        "audio_tower",
        "resampler",
        "multi_modal_projector",
        "mm_projector",
        "connector",
    }
)
# Module names that directly own the language model's decoder ``layers`` list.
_LM_LAYER_PARENTS = frozenset({"language_model", "text_model", "llm", "model"})


def lm_layer_index(name: str) -> int | None:
    """Language-model decoder layer index in a parameter name, or ``None``.

    The index is the integer after ``layers.`` where ``layers`` is owned by a language-model
    module (``language_model``, ``text_model``, ``llm`` or ``model``; also via ``.model.``), and
    no vision/projector module (``vision_tower``, ``vision_model``, ``visual``, ``vpm``, ...)
    comes earlier in the name. Examples::

        base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight -> 3
        base_model.model.llm.model.layers.12.self_attn.v_proj.lora_B.weight           -> 12
        base_model.model.model.text_model.layers.0.self_attn.o_proj.lora_A.weight     -> 0
        base_model.model.model.vision_tower.vision_model.encoder.layers.1.mlp.fc1...  -> None
        base_model.model.model.embed_tokens.weight                                    -> None
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in _NON_LM_SEGMENTS:
            return None
        if (
            part == "layers"
            and 0 < i < len(parts) - 1
            and parts[i - 1] in _LM_LAYER_PARENTS
            and parts[i + 1].isdigit()
        ):
            return int(parts[i + 1])
    return None
