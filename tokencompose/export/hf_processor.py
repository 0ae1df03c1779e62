"""What a Hugging Face LLaVA folder needs besides weights: the chat template, image processor and processor.

Re-derived from transformers 5.23 ``models/llava/processing_llava.py`` (``LlavaProcessor``: one ``<image>``
expands to ``(S / patch)^2 + num_additional_image_tokens`` tokens, minus one for the ``default`` strategy) and
``models/llava/image_processing_pil_llava.py`` (``do_pad`` pads to square with the mean colour, as LLaVA-1.5's
``expand2square`` and our ``ImageTransform`` do).
"""

from __future__ import annotations

import json
from typing import Literal

from transformers import LlavaImageProcessorPil, LlavaProcessor, PreTrainedTokenizerBase
from transformers.image_utils import PILImageResampling

from tokencompose.encoders.base import VisionEncoder
from tokencompose.llm.templates import IMAGE_PLACEHOLDER, VicunaV1Template

FeatureStrategy = Literal["default", "full"]

# Jinja for VicunaV1Template: ``{bos}{system} USER: {q} ASSISTANT: {a}{eos}USER: ...``. Every user turn ends
# with " ASSISTANT:" whether or not ``add_generation_prompt`` is set, exactly as VicunaV1Template renders a
# conversation that ends with a question. Image parts render as "<image>\n" (LLaVA-1.5's data puts the image
# first, then a newline); a leading system message replaces the template's system prompt.
_VICUNA_V1_JINJA = """\
{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set system = __SYSTEM__ -%}
{%- set eos = __EOS__ -%}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set system = render(messages[0]['content']) -%}
{%- set turns = messages[1:] -%}
{%- else -%}
{%- set turns = messages -%}
{%- endif -%}
{{- bos_token -}}
{%- for message in turns -%}
{%- set expected = 'user' if loop.index0 % 2 == 0 else 'assistant' -%}
{%- if message['role'] != expected -%}
{{- raise_exception('vicuna_v1: turn ' ~ loop.index0 ~ ' has role ' ~ message['role'] ~ ', expected ' ~ expected) -}}
{%- endif -%}
{%- if expected == 'user' -%}
{{- (system ~ ' ' if loop.first else '') ~ 'USER: ' ~ render(message['content']) ~ ' ASSISTANT:' -}}
{%- else -%}
{{- ' ' ~ render(message['content']) ~ eos -}}
{%- endif -%}
{%- endfor -%}
"""


def _jinja_string(text: str) -> str:
    """A Jinja string literal for ``text``: JSON's escapes are ones Jinja's lexer reads back (quotes, backslashes,
    control characters); non-ASCII stays literal so characters outside the BMP survive."""
    return json.dumps(text, ensure_ascii=False)


def vicuna_v1_chat_template(template: VicunaV1Template) -> str:
    """A Jinja chat template that renders what ``template`` renders (its system prompt and EOS string), with
    the text tokenizer's BOS token first as ``ConversationEncoder`` puts it."""
    return (
        _VICUNA_V1_JINJA.replace("__SYSTEM__", _jinja_string(template.system))
        .replace("__EOS__", _jinja_string(template.eos))
    )


def llava_image_processor(encoder: VisionEncoder) -> LlavaImageProcessorPil:
    """The image processor that equals our ``ImageTransform`` for ``encoder``: pad to square with the mean
    colour, bicubic resize to the encoder's size, rescale, normalise with its mean/std; no centre crop.

    Hugging Face's LLaVA-1.5 folders use a ``CLIPImageProcessor`` (shortest-edge resize + centre crop, no
    padding); we write ``LlavaImageProcessor`` with ``do_pad`` instead, since our models were trained on padded
    images. Its PIL backend (``AutoProcessor.from_pretrained(path, backend="pil")``) gives our pixels exactly;
    the default torchvision backend resizes with its own bicubic kernel (within a grey level of ours; identical
    when the image already has the encoder's size).
    """
    side = {"height": encoder.image_size, "width": encoder.image_size}
    return LlavaImageProcessorPil(
        do_pad=True,
        do_resize=True,
        size=side,
        resample=PILImageResampling.BICUBIC,
        do_center_crop=False,
        crop_size=side,  # LlavaProcessor counts image tokens from crop_size
        do_rescale=True,
        do_normalize=True,
        image_mean=list(encoder.image_mean),
        image_std=list(encoder.image_std),
        do_convert_rgb=True,
    )


def llava_processor(
    encoder: VisionEncoder,
    text_tokenizer: PreTrainedTokenizerBase,
    chat_template: str,
    strategy: FeatureStrategy,
) -> LlavaProcessor:
    """A ``LlavaProcessor`` for ``encoder`` (which has a CLS token: ``num_additional_image_tokens=1``, which the
    ``default`` strategy drops and ``full`` keeps). ``text_tokenizer`` must already contain ``<image>``."""
    return LlavaProcessor(
        image_processor=llava_image_processor(encoder),
        tokenizer=text_tokenizer,
        patch_size=encoder.patch_size,
        vision_feature_select_strategy=strategy,
        chat_template=chat_template,
        image_token=IMAGE_PLACEHOLDER,
        num_additional_image_tokens=1,
    )
