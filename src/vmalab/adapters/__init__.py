"""Adapters that make vmalab the address space of an emulator.

- :mod:`vmalab.adapters.syscalls`: the x86-64 Linux syscall dispatcher both adapters share (the memory
  syscalls through :meth:`vmalab.mm.MM.syscall`, the few others a static program makes, ``/proc/self/maps``
  and ``smaps`` from :mod:`vmalab.procfs`);
- :mod:`vmalab.adapters.unicorn`: run a static x86-64 ELF under Unicorn 2.1 with vmalab as its MMU
  (optional extra ``vmalab[unicorn]``);
- :mod:`vmalab.adapters.qiling`: vmalab as Qiling's memory manager (optional extra ``vmalab[qiling]``).

The adapters are tools, a layer above the model (like the lab): the model never imports them.
"""

#: the emulators with an adapter (``vmalab emulate --engine``)
ENGINES = ("unicorn", "qiling")
