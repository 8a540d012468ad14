"""tierflow's policy core: Calico and Kubernetes policy, parsed, compiled and evaluated.

Pure: values in, values out; no files, sockets or databases.

>>> from policy import parse_selector
>>> parse_selector("app == 'web'").matches({"app": "web"})
True
"""

from policy.endpoints import Endpoint, LabelSet, NamedPortDef, Peer
from policy.errors import DocumentError, HitSyntaxError, PolicyError, SelectorSyntaxError
from policy.evaluate import DirectionVerdict, Evaluator, Flow, Hit, Verdict
from policy.fields import FieldReader
from policy.hits import ParsedHit, parse_hit
from policy.loader import Document, iter_documents, load_text, read_document
from policy.model import (
    Action,
    Direction,
    NetworkSet,
    Policy,
    PolicyKind,
    StagedAction,
    Tier,
)
from policy.policyset import PolicySet
from policy.selector import Selector, parse_selector

__all__ = [
    "Action",
    "Direction",
    "DirectionVerdict",
    "Document",
    "DocumentError",
    "Endpoint",
    "Evaluator",
    "FieldReader",
    "Flow",
    "Hit",
    "HitSyntaxError",
    "LabelSet",
    "NamedPortDef",
    "NetworkSet",
    "ParsedHit",
    "Peer",
    "Policy",
    "PolicyError",
    "PolicyKind",
    "PolicySet",
    "Selector",
    "SelectorSyntaxError",
    "StagedAction",
    "Tier",
    "Verdict",
    "iter_documents",
    "load_text",
    "parse_hit",
    "parse_selector",
    "read_document",
]
