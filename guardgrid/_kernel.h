/* guardgrid._kernel's parts, shared between its C files (_kernel.c: the module and the filter;
 * _pod_reader.c: the incoming pod's scheduling fields). */
#ifndef GUARDGRID_KERNEL_H
#define GUARDGRID_KERNEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* What a reader or decision step returns: done, "not sure to reproduce Python: let Python decide" (the
 * caller returns None), or an exception is set. */
enum { PARSED = 1, DECLINED = 0, FAILED = -1 };

extern const char read_pod_doc[];
PyObject *kernel_read_pod(PyObject *self, PyObject *args);

#endif
