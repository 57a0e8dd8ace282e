"""Zero-shot text embeddings of the class and background prompts (spec §2).

Per name: format the template -> tokenize -> encode -> L2-normalise -> mean over templates (one template)
-> L2-normalise again. Comma-separated synonyms stay inside one prompt ("a clean origami person with
clothes,people,human."), as in the authors' code and CLIP-ES.
"""

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from weclip.models.clip_backbone import FrozenCLIP

__all__ = ["prompt_embeddings"]


def prompt_embeddings(
    backbone: FrozenCLIP, names: Sequence[str], template: Union[str, Sequence[str]]
) -> torch.Tensor:
    """Text embeddings of ``template.format(name)`` for each name.

    Arguments:
        backbone (FrozenCLIP): the frozen CLIP.
        names (Sequence[str]): class or background names.
        template (str | Sequence[str]): one template (the authors': "a clean origami {}.") or several,
            whose embeddings are averaged.

    Returns:
        torch.Tensor: (len(names), E) L2-normalised embeddings, fp32, on the backbone's device.
    """
    templates = [template] if isinstance(template, str) else list(template)
    if not names:
        raise ValueError("prompt_embeddings needs at least one name")
    per_template = torch.stack(
        [backbone.encode_text([t.format(name) for name in names]) for t in templates], dim=0
    )  # (T, N, E), each row already normalised
    return F.normalize(per_template.mean(dim=0), dim=-1)
