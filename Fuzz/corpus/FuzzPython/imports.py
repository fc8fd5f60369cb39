#!/usr/bin/env python3
"""Every import form PythonImports reads."""
import os, sys as system, json
import xml.etree.ElementTree as ET
from collections import OrderedDict, defaultdict as dd
from . import sibling
from ..pkg.sub import thing, other as o
from .helpers import (
    parse,
    render,  # trailing comment
)
from urllib.request import \
    urlopen
from os.path import *
import numpy.linalg  # comment
def f():
    import csv
