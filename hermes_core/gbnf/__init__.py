"""llama.cpp GBNF grammars for the core's constraints (``constraint_gbnf``), for the llama-server dialect.

xgrammar prints EBNF that llama.cpp cannot parse, and has no GBNF writer, so this package reads the
constraint's source (structural tag JSON with embedded xgrammar EBNF, or a JSON schema) and writes
GBNF: ``ebnf`` reads xgrammar's EBNF, ``text`` spells "text without these strings", ``structural_tag``
converts the formats, ``builder`` names rules and prints.
"""

from hermes_core.gbnf.structural_tag import constraint_gbnf, json_schema_gbnf, structural_tag_gbnf

__all__ = ["constraint_gbnf", "json_schema_gbnf", "structural_tag_gbnf"]
