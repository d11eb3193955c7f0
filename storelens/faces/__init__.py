"""Faces of shoppers: detection, quality gate, attributes, aggregation (and re-identification).

Import the submodules you need (e.g. :mod:`storelens.faces.detect`,
:mod:`storelens.faces.quality`, :mod:`storelens.faces.attributes`,
:mod:`storelens.faces.aggregate`). Nothing is imported here, so importing one
module does not load the others' models.
"""
