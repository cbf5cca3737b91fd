"""Build a Hugging Face `tokenizer.json` from a SentencePiece BPE model.

mlx-lm 0.32.2 requires transformers>=5, which can no longer build a fast
tokenizer from a `.model` file the way transformers 4.57 did. This module
therefore builds the `tokenizers` objects directly from the SentencePiece
model proto, without transformers.

How the SentencePiece BPE model maps onto a `tokenizers` BPE model:

* vocab: every piece, with its id (byte-fallback pieces `<0xNN>` included).
* merges: SentencePiece BPE merges, at each step, the adjacent pair whose
  concatenation is a piece with the best score (for Mistral: score = -id, so
  the lowest id). A `tokenizers` BPE ranks *pairs*, so every split of every
  normal piece into two normal pieces becomes a merge, ranked by the id of the
  merged piece (ties: ids of the left, then right part).
* normalizer: SentencePiece's `add_dummy_prefix` + whitespace escape, i.e.
  `Sequence[Prepend("▁"), Replace(" ", "▁")]`, no pre-tokenizer. Each text
  segment between special tokens gets the prefix, as if sentencepiece encoded
  it alone (this is how mistral-common builds chat prompts, piece by piece).
  A `Metaspace("▁", prepend_scheme="first")` pre-tokenizer was tried for v0.3:
  it does not prepend to text that already starts with a space, so " a" and
  " " encode differently from sentencepiece; hence the normalizer for both.
* decoder: `▁` back to space, byte fallback, fuse, and strip the one leading
  space the dummy prefix introduced.
* control pieces (`<s>`, `</s>`, `[INST]`, ...) and `<unk>` become special
  added tokens; user-defined pieces (`[REFERENCE_DOC_N]` in v0.3) become
  non-special added tokens. Known difference (tokenizer_check.py lists it):
  sentencepiece matches them after the whole text got the dummy prefix, the
  JSON splits them off first, so the "▁" around them can differ. No chat
  prompt uses them.
* post-processor: prepend `<s>` (BOS) like the Hugging Face Mistral files.

`tokenizer_check.py` proves the result encodes/decodes as sentencepiece does.
"""

from __future__ import annotations

import os

from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE

# SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
SP_NORMAL, SP_UNKNOWN, SP_CONTROL, SP_USER_DEFINED, SP_UNUSED, SP_BYTE = 1, 2, 3, 4, 5, 6

SPIECE_UNDERLINE = "\u2581"  # "▁", SentencePiece's escaped space


def mistral_common_model_path(version: str) -> str:
    """Path of a SentencePiece model shipped in the mistral-common wheel.

    version "v1" is Mistral 7B v0.1 (32000 ids), "v3" is v0.3 (32768 ids).
    """
    names = {
        "v1": "tokenizer.model.v1",
        "v3": "mistral_instruct_tokenizer_240323.model.v3",
    }
    # Where mistral-common is not installed (the GPU machine), a folder with
    # copies of those two files.
    override = os.environ.get("MISTRAL_MLX_SP_MODELS")
    if override:
        return os.path.join(override, names[version])
    import mistral_common

    return os.path.join(os.path.dirname(mistral_common.__file__), "data", names[version])


def load_proto(model_path: str) -> sp_pb2.ModelProto:
    proto = sp_pb2.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type != sp_pb2.TrainerSpec.BPE:
        raise ValueError(f"{model_path}: only SentencePiece BPE models are supported")
    ns = proto.normalizer_spec
    # The normalizer below reproduces exactly this configuration; refuse others.
    if not ns.add_dummy_prefix or ns.remove_extra_whitespaces or ns.precompiled_charsmap:
        raise ValueError(f"{model_path}: unsupported normalizer_spec {ns}")
    return proto


def build_merges(proto: sp_pb2.ModelProto) -> list[tuple[str, str]]:
    """All (left, right) pairs of normal pieces whose concatenation is a normal
    piece, ordered as SentencePiece would apply them (best merged score first)."""
    normal = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == SP_NORMAL}
    scores = [p.score for p in proto.pieces]
    ranked = []
    for merged, merged_id in normal.items():
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            if left in normal and right in normal:
                # Higher score merges first; ties broken by id for determinism.
                key = (-scores[merged_id], merged_id, normal[left], normal[right])
                ranked.append((key, left, right))
    ranked.sort()
    return [(left, right) for _, left, right in ranked]


def is_legacy(proto: sp_pb2.ModelProto) -> bool:
    """True for v0.1-style models whose only control pieces are bos/eos."""
    return sum(p.type == SP_CONTROL for p in proto.pieces) <= 2


def build_tokenizer(model_path: str) -> Tokenizer:
    proto = load_proto(model_path)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk_piece = proto.trainer_spec.unk_piece
    bpe = BPE(
        vocab=vocab,
        merges=build_merges(proto),
        unk_token=unk_piece,
        fuse_unk=True,  # SentencePiece emits one <unk> for a run of unknowns
        byte_fallback=proto.trainer_spec.byte_fallback,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE)]
    )
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPIECE_UNDERLINE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),  # drop the dummy-prefix space
        ]
    )

    # Added tokens, in id order. Special: <unk> and control pieces. Non-special
    # (matched in text, kept when decoding): user-defined pieces.
    specials, user_defined = [], []
    for p in proto.pieces:
        if p.type in (SP_UNKNOWN, SP_CONTROL):
            specials.append(AddedToken(p.piece, special=True, normalized=False))
        elif p.type == SP_USER_DEFINED:
            user_defined.append(AddedToken(p.piece, special=False, normalized=False))
    tok.add_special_tokens(specials)
    if user_defined:
        tok.add_tokens(user_defined)

    bos = proto.trainer_spec.bos_piece
    bos_id = vocab[bos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    return tok


def special_pieces(model_path: str) -> dict[str, str]:
    """bos/eos/unk piece strings, for tokenizer_config.json."""
    ts = load_proto(model_path).trainer_spec
    return {"bos_token": ts.bos_piece, "eos_token": ts.eos_piece, "unk_token": ts.unk_piece}


def write_tokenizer_json(model_path: str, out_path: str) -> None:
    build_tokenizer(model_path).save(out_path, pretty=False)


# Mistral-style chat templates (Jinja, Hugging Face `chat_template` field).
# They render the prompt that mistral-common builds for the same messages; a
# system message is prepended to a user message as mistral-common does: the
# first user message for v0.1 (tokenizer v1), the last one for v0.3 (v3).
# v0.3: "[INST]"/"[/INST]" are control tokens and mistral-common encodes the
# text after them with its own dummy prefix ("[INST]▁Hello"), which the JSON's
# per-segment Prepend("▁") adds, so the template puts no space after them.
# v0.1: "[INST]" is plain text; "[INST] Hello [/INST]" is one segment.
# tokenizer_check.py verifies template + tokenizer.json == mistral-common ids.
def _system_prefix(which: str) -> str:
    """Template head: splits off the system message and starts the message
    loop; `which` is "first" or "last" (user message that gets the system)."""
    pick = "{%- if last_user.i < 0 %}" if which == "first" else ""
    end = "{%- endif %}" if which == "first" else ""
    return (
        "{%- if messages[0]['role'] == 'system' %}"
        "{%- set system_message = messages[0]['content'] %}"
        "{%- set loop_messages = messages[1:] %}"
        "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
        "{%- set last_user = namespace(i=-1) %}"  # index of the chosen user message
        "{%- for m in loop_messages %}{%- if m['role'] == 'user' %}"
        + pick + "{%- set last_user.i = loop.index0 %}" + end +
        "{%- endif %}{%- endfor %}"
        "{{- bos_token }}"
        "{%- for message in loop_messages %}"
        "{%- if message['role'] == 'user' %}"
        "{%- if system_message is defined and loop.index0 == last_user.i %}"
        "{%- set content = system_message + '\\n\\n' + message['content'] %}"
        "{%- else %}{%- set content = message['content'] %}{%- endif %}"
    )


CHAT_TEMPLATE_V3 = (
    _system_prefix("last") + "{{- '[INST]' + content + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only system, user and assistant roles are supported') }}"
    "{%- endif %}{%- endfor %}"
)
CHAT_TEMPLATE_V1 = (
    _system_prefix("first") + "{{- '[INST] ' + content + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only system, user and assistant roles are supported') }}"
    "{%- endif %}{%- endfor %}"
)


def chat_template(model_path: str) -> str:
    return CHAT_TEMPLATE_V1 if is_legacy(load_proto(model_path)) else CHAT_TEMPLATE_V3
