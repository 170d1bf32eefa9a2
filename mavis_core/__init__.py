"""Steer a language model between objectives at inference time: MAVIS, MOD, RSoup and the base side by side."""

from .config import DecodeConfig
from .decoding import Generation, TokenEvent, generate, generate_batch, generate_reply
from .stack import Stack, load_stack

__all__ = ["DecodeConfig", "Generation", "Stack", "TokenEvent", "generate", "generate_batch", "generate_reply",
           "load_stack"]
