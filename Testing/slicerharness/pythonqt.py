"""A stand-in for Slicer's PythonQt ``qt`` module, built on PyQt5.

Every QObject class of QtCore/QtGui/QtWidgets is re-exported as a subclass that follows PythonQt's
conventions instead of PyQt's:

- Qt properties are attributes: ``combo.currentText``, ``button.enabled = False``, ``spin.value = 3``
  (PythonQt lets a property shadow the getter of the same name, so ``label.text()`` fails as it does in Slicer);
- ``obj.name`` is the object name;
- ``obj.connect("clicked(bool)", slot)`` / ``obj.disconnect("clicked(bool)", slot)`` take C++ signal signatures;
- a Python exception in a slot is printed and recorded, never fatal (PyQt5 would abort the process).

Property access is switched off while PyQt's own Python code runs on these objects (``uic`` building a
``.ui`` file calls ``widget.font()``), see :func:`pyqt_semantics`.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from typing import Any

from PyQt5 import QtCore, QtGui, QtWidgets

_STATE = {"pythonqt": True}
_BASE_GETATTR = QtCore.QObject.__getattribute__
_BASE_SETATTR = QtCore.QObject.__setattr__
#: Exceptions raised inside slots (PythonQt prints them and carries on); the harness asserts this stays empty.
SLOT_ERRORS: list[str] = []

#: C++ argument types of signal signatures → PyQt5 overload keys.
_CPP_TYPES = {"bool": bool, "int": int, "double": float, "float": float, "QString": str, "const QString&": str,
              "QStringList": list}


@contextlib.contextmanager
def pyqt_semantics():
    """Temporarily give these objects plain PyQt5 behaviour (methods, not properties)."""
    before = _STATE["pythonqt"]
    _STATE["pythonqt"] = False
    try:
        yield
    finally:
        _STATE["pythonqt"] = before


_PROPERTY_CACHE: dict[type, frozenset[str]] = {}


def _property_names(cls: type) -> frozenset[str]:
    names = _PROPERTY_CACHE.get(cls)
    if names is None:
        meta = cls.staticMetaObject
        names = frozenset(meta.property(i).name() for i in range(meta.propertyCount()))
        _PROPERTY_CACHE[cls] = names
    return names


def _parse_signature(signature: str) -> tuple[str, list[str]]:
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", signature)
    if not match:
        return signature.strip(), []
    args = [a.strip() for a in match.group(2).split(",") if a.strip()]
    return match.group(1), args


def _guarded(slot: Any) -> Any:
    """Wrap a Python slot so that an exception is printed and recorded (PythonQt) instead of aborting."""
    def call(*args: Any) -> Any:
        try:
            return _call_with_fitting_args(slot, args)
        except Exception:  # noqa: BLE001  (PythonQt prints exceptions from slots)
            text = traceback.format_exc()
            SLOT_ERRORS.append(text)
            print(text, file=sys.stderr)
            return None

    call.__wrapped__ = slot  # type: ignore[attr-defined]
    return call


def _call_with_fitting_args(slot: Any, args: tuple) -> Any:
    """PythonQt passes as many signal arguments as the callable accepts."""
    import inspect

    try:
        sig = inspect.signature(slot)
    except (TypeError, ValueError):
        return slot(*args)
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return slot(*args)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return slot(*args[: len(positional)])


class _Connections:
    """Book-keeping of string-signature connections so that ``disconnect`` finds the wrapper again."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, Any]] = []


class PythonQtMixin:
    """PythonQt attribute conventions on top of a PyQt5 class (put first in the bases)."""

    def __getattribute__(self, name: str) -> Any:
        if name[:1] != "_" and _STATE["pythonqt"]:
            cls = type(self)
            if name in _property_names(cls):
                return QtCore.QObject.property(self, name)
            if name == "name":
                return QtCore.QObject.objectName(self)
        return _BASE_GETATTR(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name[:1] != "_" and _STATE["pythonqt"]:
            if name in _property_names(type(self)):
                if isinstance(value, tuple):
                    value = list(value)
                if not QtCore.QObject.setProperty(self, name, value):
                    raise AttributeError(f"cannot set property {name!r} of {type(self).__name__} to {value!r}")
                return
            if name == "name":
                QtCore.QObject.setObjectName(self, value)
                return
        _BASE_SETATTR(self, name, value)

    def __bool__(self) -> bool:
        # PythonQt wrappers are true while the C++ object lives (PyQt's QComboBox/QListWidget have __len__)
        from PyQt5 import sip

        return not sip.isdeleted(self)

    # PythonQt: obj.connect("signal(args)", callable)
    def connect(self, signal: Any, slot: Any = None, *rest: Any) -> bool:
        if not isinstance(signal, str):
            raise TypeError("connect(signal signature string, callable)")
        bound = self._signal(signal)
        wrapper = _guarded(slot)
        bound.connect(wrapper)
        if "_pythonqt_connections" not in self.__dict__:
            object.__setattr__(self, "_pythonqt_connections", _Connections())
        self.__dict__["_pythonqt_connections"].items.append((signal.replace(" ", ""), slot, wrapper))
        return True

    def disconnect(self, signal: Any = None, slot: Any = None) -> bool:
        if not isinstance(signal, str):
            original = _ORIGINAL.get("disconnect") or type(self).__mro__[-2].__dict__.get("disconnect")
            return original(self) if signal is None else original(signal)
        connections = self.__dict__.get("_pythonqt_connections")
        key = signal.replace(" ", "")
        found = False
        if connections is not None:
            for item in list(connections.items):
                if item[0] == key and (slot is None or item[1] == slot):
                    try:
                        self._signal(signal).disconnect(item[2])
                    except TypeError:
                        pass
                    connections.items.remove(item)
                    found = True
        return found

    def _signal(self, signature: str) -> Any:
        name, args = _parse_signature(signature)
        with pyqt_semantics():
            bound = getattr(self, name)
        if args:
            key = tuple(_CPP_TYPES.get(a, object) for a in args)
            for candidate in (key if len(key) > 1 else key[0], "PyQt_PyObject" if key == (object,) else None):
                if candidate is None:
                    continue
                try:
                    return bound[candidate]
                except (KeyError, TypeError):
                    continue
        return bound


_ORIGINAL: dict[str, Any] = {}


def install() -> None:
    """Give *every* QObject PythonQt's conventions, also those Qt creates itself (``edit.verticalScrollBar()``),
    by patching ``QObject``'s attribute access (undone by :func:`uninstall`)."""
    if _ORIGINAL:
        return
    base = QtCore.QObject
    for name in ("__getattribute__", "__setattr__", "__bool__", "connect", "disconnect"):
        _ORIGINAL[name] = base.__dict__.get(name)
    for name in ("__getattribute__", "__setattr__", "__bool__", "connect", "disconnect"):
        setattr(base, name, PythonQtMixin.__dict__[name])


def uninstall() -> None:
    base = QtCore.QObject
    for name, value in _ORIGINAL.items():
        if value is None:
            try:
                delattr(base, name)
            except AttributeError:
                pass
        else:
            setattr(base, name, value)
    _ORIGINAL.clear()


def _shim(cls: type) -> type:
    return type(cls.__name__, (PythonQtMixin, cls), {"__module__": __name__})


def _export() -> dict[str, Any]:
    names: dict[str, Any] = {}
    for module in (QtCore, QtGui, QtWidgets):
        for attr in dir(module):
            if not attr.startswith("Q") and attr != "Qt":
                continue
            value = getattr(module, attr)
            if isinstance(value, type) and issubclass(value, QtCore.QObject):
                try:
                    names[attr] = _shim(value)
                except TypeError:
                    names[attr] = value
            else:
                names[attr] = value
    return names


globals().update(_export())
Qt = QtCore.Qt


class QUiLoader(QtCore.QObject):  # noqa: F811  (PythonQt's QtUiTools loader, implemented with PyQt5.uic)
    """``qt.QUiLoader().load(qfile)``: builds the widgets as the PythonQt-style classes of this module and of
    the ``ctk``/``slicer`` stand-ins (custom widgets are looked up by class name)."""

    def load(self, qfile: Any, parent: Any = None) -> Any:
        from . import uiloader

        with pyqt_semantics():
            path = qfile.fileName()
        return uiloader.load_ui(path, parent)
