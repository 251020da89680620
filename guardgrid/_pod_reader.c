/*
 * guardgrid._kernel.read_pod: what a scheduling decision needs of the incoming pod, read straight from the
 * request's JSON bytes.
 *
 * Why: kube-scheduler sends a pod the extender has not seen yet in nearly every filter request (~2.7 KB of
 * JSON for a typical training pod). orjson.loads builds ~150 objects of it and pod_from_dict walks them; in
 * a gunicorn worker, whose caches go cold between requests, that was ~100-170 us of a ~220 us filter
 * (docs/bench-extender.md, "Fifth round"). A filter needs four things of the pod: its uid, its job (labels,
 * one annotation, the controller's name) and its memory request and limit (containers, init containers,
 * overhead). This reader finds them in one pass over the bytes and builds only those few strings.
 *
 * Exactness: the Python reader (orjson + guardgrid.records.pod_from_dict) stays the reference. This one
 * accepts a pod only when that one would accept it too and read the same values from it:
 * - it validates the whole value as orjson does (RFC 8259 structure, strings, escapes, numbers, literals);
 * - it checks the type of every field pod_from_dict checks, however unused here (status.conditions too);
 * - it reads each field as pod_from_dict does, "last key wins" aside: a field it reads that is sent twice
 *   makes it decline.
 * Where it is not sure it declines (returns None), and Python reads the pod, which also words any error:
 * non-ASCII text, a \u escape of a surrogate, a number with an exponent or over 18 characters, nesting over
 * 64 levels, a key with an escape in an object it reads, a value it reads with an escape or of an unusual
 * type. tests/test_pod_reader.py compares the two readers on thousands of mutated pods.
 */
#include "_kernel.h"

#include <string.h>

enum { END = 2 };   /* next_item/object_next: the closing bracket was read */
enum { MAX_DEPTH = 64, MAX_NUMBER = 18 };
enum { ABSENT = 0, NULL_VALUE = 1, STRING = 2 };

typedef struct {
    const char *text;
    Py_ssize_t size, at;
    int depth;
} Scanner;

/* A string's raw text, between its quotes. */
typedef struct {
    Py_ssize_t start, length;
    int escaped;
} Span;

/* A field read for its value: absent, null, or a string without escapes (then `span` holds it). */
typedef struct {
    int state;
    Span span;
} Field;

static char peek(Scanner *s) {
    while (s->at < s->size) {
        char ch = s->text[s->at];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') return ch;
        s->at++;
    }
    return 0;
}

static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static int scan_string(Scanner *s, Span *span) {
    if (peek(s) != '"') return DECLINED;
    Py_ssize_t at = s->at + 1;
    span->start = at;
    span->escaped = 0;
    for (;;) {
        if (at >= s->size) return DECLINED;
        unsigned char ch = (unsigned char)s->text[at];
        if (ch == '"') break;
        if (ch < 0x20 || ch >= 0x80) return DECLINED; /* orjson rejects the former; UTF-8 is left to it */
        if (ch != '\\') {
            at++;
            continue;
        }
        span->escaped = 1;
        if (s->size - at < 2) return DECLINED;
        char escape = s->text[at + 1];
        if (escape == 'u') {
            if (s->size - at < 6) return DECLINED;
            int code = 0;
            for (int k = 2; k < 6; k++) {
                int digit = hex_digit(s->text[at + k]);
                if (digit < 0) return DECLINED;
                code = code * 16 + digit;
            }
            if (code >= 0xD800 && code <= 0xDFFF) return DECLINED; /* a surrogate: its pairing is orjson's call */
            at += 6;
        } else if (escape == '"' || escape == '\\' || escape == '/' || escape == 'b' || escape == 'f' ||
                   escape == 'n' || escape == 'r' || escape == 't') {
            at += 2;
        } else {
            return DECLINED;
        }
    }
    span->length = at - span->start;
    s->at = at + 1;
    return PARSED;
}

/* RFC 8259's number, without an exponent and at most MAX_NUMBER characters: orjson reads every such number
 * (longer ones may overflow a double, which it rejects). */
static int scan_number(Scanner *s) {
    Py_ssize_t at = s->at;
    if (at < s->size && s->text[at] == '-') at++;
    if (at >= s->size || !is_digit(s->text[at])) return DECLINED;
    if (s->text[at] == '0') {
        at++;
    } else {
        while (at < s->size && is_digit(s->text[at])) at++;
    }
    if (at < s->size && s->text[at] == '.') {
        at++;
        if (at >= s->size || !is_digit(s->text[at])) return DECLINED;
        while (at < s->size && is_digit(s->text[at])) at++;
    }
    if (at < s->size && (s->text[at] == 'e' || s->text[at] == 'E')) return DECLINED;
    if (at - s->at > MAX_NUMBER) return DECLINED;
    s->at = at;
    return PARSED;
}

static int scan_literal(Scanner *s, const char *word, Py_ssize_t length) {
    if (s->size - s->at < length || memcmp(s->text + s->at, word, (size_t)length) != 0) return DECLINED;
    s->at += length;
    return PARSED;
}

static int open_container(Scanner *s, char bracket) {
    if (peek(s) != bracket || ++s->depth > MAX_DEPTH) return DECLINED;
    s->at++;
    return PARSED;
}

/* Before each item of an object or array: PARSED (at the item), END (the closing bracket, read) or DECLINED.
 * `count`: items so far. A separator must be followed by an item, so a trailing comma declines. */
static int next_item(Scanner *s, int *count, char closing) {
    char ch = peek(s);
    if (ch == closing) {
        s->at++;
        s->depth--;
        return END;
    }
    if (*count > 0) {
        if (ch != ',') return DECLINED;
        s->at++;
        if (peek(s) == closing) return DECLINED;
    }
    (*count)++;
    return PARSED;
}

/* The next member of an object: its key in `key`, the scanner then at its value. */
static int object_next(Scanner *s, int *count, Span *key) {
    int status = next_item(s, count, '}');
    if (status != PARSED) return status;
    if (scan_string(s, key) != PARSED || peek(s) != ':') return DECLINED;
    s->at++;
    return PARSED;
}

static int skip_value(Scanner *s) {
    Span key;
    int count = 0, status;
    switch (peek(s)) {
    case '"':
        return scan_string(s, &key);
    case '{':
        if (open_container(s, '{') != PARSED) return DECLINED;
        while ((status = object_next(s, &count, &key)) == PARSED) {
            if (skip_value(s) != PARSED) return DECLINED;
        }
        return status == END ? PARSED : DECLINED;
    case '[':
        if (open_container(s, '[') != PARSED) return DECLINED;
        while ((status = next_item(s, &count, ']')) == PARSED) {
            if (skip_value(s) != PARSED) return DECLINED;
        }
        return status == END ? PARSED : DECLINED;
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        return scan_number(s);
    }
}

/* 1: a null here, read (pod_from_dict reads a null object as {} and a null list as []); 0: something else,
 * not read; -1: bad JSON. */
static int null_here(Scanner *s) {
    if (peek(s) != 'n') return 0;
    return scan_literal(s, "null", 4) == PARSED ? 1 : -1;
}

/* An object pod_from_dict reads, or null: PARSED after opening it (then `*is_null` 0), or after its null. */
static int open_object(Scanner *s, int *is_null) {
    int null = null_here(s);
    *is_null = null == 1;
    if (null) return null > 0 ? PARSED : DECLINED;
    return open_container(s, '{');
}

static int key_is(const Scanner *s, const Span *key, const char *name, Py_ssize_t length) {
    return key->length == length && memcmp(s->text + key->start, name, (size_t)length) == 0;
}

/* A string without escapes (its value is read), or null when `nullable`. */
static int read_field(Scanner *s, Field *field, int nullable) {
    int null = null_here(s);
    if (null < 0 || (null && !nullable)) return DECLINED;
    if (null) {
        field->state = NULL_VALUE;
        return PARSED;
    }
    if (scan_string(s, &field->span) != PARSED || field->span.escaped) return DECLINED;
    field->state = STRING;
    return PARSED;
}

/* A field's value as Python: its string, or None when it was absent or null. */
static PyObject *text_or_none(const Scanner *s, const Field *field) {
    if (field->state != STRING) Py_RETURN_NONE;
    return PyUnicode_DecodeASCII(s->text + field->span.start, field->span.length, NULL);
}

/* ---- objects read member by member --------------------------------------------------------------------- */

/* How one member's value is read: the scanner is at the value, `context` is the reader's (a Pod, a
 * Container, an Owner or a Field). */
typedef int (*ReadValue)(Scanner *s, void *context);

typedef struct {
    const char *key;
    Py_ssize_t length;
    ReadValue read;
} Member;

#define MEMBER(literal, read) {(literal), (Py_ssize_t)sizeof(literal) - 1, (read)}

/* An object pod_from_dict reads (a null reads as {}): each of `members` by its reader, every other member
 * validated and skipped. A member read twice declines (orjson keeps the second, this reader saw the first),
 * and so does any key with an escape (it might spell one of `members`). */
static int read_object(Scanner *s, const Member *members, int count, void *context) {
    int is_null, items = 0, status;
    unsigned seen = 0;
    Span key;
    if (open_object(s, &is_null) != PARSED) return DECLINED;
    if (is_null) return PARSED;
    while ((status = object_next(s, &items, &key)) == PARSED) {
        if (key.escaped) return DECLINED;
        int i = 0;
        while (i < count && !key_is(s, &key, members[i].key, members[i].length)) i++;
        int read;
        if (i == count) {
            read = skip_value(s);
        } else if (seen & (1u << i)) {
            read = DECLINED;
        } else {
            seen |= 1u << i;
            read = members[i].read(s, context);
        }
        if (read != PARSED) return read;
    }
    return status == END ? PARSED : DECLINED;
}

/* An array pod_from_dict iterates (a null reads as []), each item read by `read`. */
static int read_array(Scanner *s, ReadValue read, void *context) {
    int null = null_here(s), count = 0, status;
    if (null) return null > 0 ? PARSED : DECLINED;
    if (open_container(s, '[') != PARSED) return DECLINED;
    while ((status = next_item(s, &count, ']')) == PARSED) {
        int item = read(s, context);
        if (item != PARSED) return item;
    }
    return status == END ? PARSED : DECLINED;
}

static int skip_item(Scanner *s, void *context) { return skip_value(s); }

/* ---- memory: requests, limits, overhead ------------------------------------------------------------------ */

static int read_quantity(Scanner *s, void *field) { return read_field(s, field, 1); }

static const Member MEMORY[] = {MEMBER("memory", read_quantity)};

/* requests, limits or overhead, whose "memory" goes to the Field `field`. */
static int read_memory(Scanner *s, void *field) { return read_object(s, MEMORY, 1, field); }

typedef struct {
    Field request, limit;
    int init, always;
} Container;

static int read_requests(Scanner *s, void *container) {
    return read_memory(s, &((Container *)container)->request);
}

static int read_limits(Scanner *s, void *container) { return read_memory(s, &((Container *)container)->limit); }

static const Member RESOURCES[] = {MEMBER("requests", read_requests), MEMBER("limits", read_limits)};

static int read_resources(Scanner *s, void *container) { return read_object(s, RESOURCES, 2, container); }

/* An init container's restartPolicy ("Always": a sidecar); of an app container, or of another type, it is
 * simply not "Always". */
static int read_restart_policy(Scanner *s, void *context) {
    Container *container = context;
    Span policy;
    if (!container->init || peek(s) != '"') return skip_value(s);
    if (scan_string(s, &policy) != PARSED || policy.escaped) return DECLINED;
    container->always = key_is(s, &policy, "Always", 6);
    return PARSED;
}

static const Member CONTAINER[] = {MEMBER("resources", read_resources),
                                   MEMBER("restartPolicy", read_restart_policy)};

/* ---- the pod ------------------------------------------------------------------------------------------- */

typedef struct {
    Field uid, job_label, standby_label, job_annotation, owner_name;
    int owner_found;
    Field overhead;
    PyObject *containers, *inits; /* lists */
    Member labels[2], annotations[1];  /* the keys read in each, from guardgrid.keys */
} Pod;

/* One container: appends (request, limit) to `out`, or (request, limit, restartPolicy is "Always") for an
 * init container. A missing request is the limit (guardgrid.records._container_memory); a null one is none. */
static int read_container(Scanner *s, PyObject *out, int init) {
    Container container = {{ABSENT}, {ABSENT}, init, 0};
    int read = read_object(s, CONTAINER, 2, &container);
    if (read != PARSED) return read;
    PyObject *limit = text_or_none(s, &container.limit);
    PyObject *request = container.request.state == ABSENT ? Py_XNewRef(limit) : text_or_none(s, &container.request);
    PyObject *item = NULL;
    if (limit != NULL && request != NULL) {
        item = init ? Py_BuildValue("(OOO)", request, limit, container.always ? Py_True : Py_False)
                    : PyTuple_Pack(2, request, limit);
    }
    Py_XDECREF(limit);
    Py_XDECREF(request);
    if (item == NULL) return FAILED;
    int appended = PyList_Append(out, item);
    Py_DECREF(item);
    return appended < 0 ? FAILED : PARSED;
}

static int read_app_container(Scanner *s, void *pod) { return read_container(s, ((Pod *)pod)->containers, 0); }

static int read_init_container(Scanner *s, void *pod) { return read_container(s, ((Pod *)pod)->inits, 1); }

static int read_containers(Scanner *s, void *pod) { return read_array(s, read_app_container, pod); }

static int read_init_containers(Scanner *s, void *pod) { return read_array(s, read_init_container, pod); }

static int read_overhead(Scanner *s, void *pod) { return read_memory(s, &((Pod *)pod)->overhead); }

static const Member SPEC[] = {MEMBER("containers", read_containers),
                              MEMBER("initContainers", read_init_containers), MEMBER("overhead", read_overhead)};

typedef struct {
    Field name;
    int controller;
} Owner;

static int read_controller(Scanner *s, void *owner) {
    if (peek(s) == 't') {
        ((Owner *)owner)->controller = 1;
        return scan_literal(s, "true", 4);
    }
    if (peek(s) == 'f') return scan_literal(s, "false", 5);
    return null_here(s) == 1 ? PARSED : DECLINED; /* a truthy string or number: Python's to judge */
}

static int read_owner_name(Scanner *s, void *owner) { return read_field(s, &((Owner *)owner)->name, 0); }

static const Member OWNER[] = {MEMBER("controller", read_controller), MEMBER("name", read_owner_name)};

/* An ownerReference: the first whose controller is true names the job (guardgrid.records.job_of). */
static int read_owner(Scanner *s, void *context) {
    Pod *pod = context;
    Owner owner = {{ABSENT}, 0};
    if (peek(s) != '{') return DECLINED; /* pod_from_dict skips a null or a string here: rare, Python's */
    int read = read_object(s, OWNER, 2, &owner);
    if (read == PARSED && owner.controller && !pod->owner_found) {
        pod->owner_found = 1;
        pod->owner_name = owner.name;
    }
    return read;
}

static int read_owners(Scanner *s, void *pod) { return read_array(s, read_owner, pod); }

/* A name pod_from_dict only checks: a string (any) or null. */
static int check_name(Scanner *s, void *pod) {
    Span span;
    int null = null_here(s);
    if (null) return null > 0 ? PARSED : DECLINED;
    return scan_string(s, &span);
}

static int read_uid(Scanner *s, void *pod) { return read_field(s, &((Pod *)pod)->uid, 1); }

/* Label and annotation values: pod_from_dict reads every one with str(), so only the ones used must be plain
 * strings; null would read as "None". */
static int read_job_label(Scanner *s, void *pod) { return read_field(s, &((Pod *)pod)->job_label, 0); }

static int read_standby_label(Scanner *s, void *pod) { return read_field(s, &((Pod *)pod)->standby_label, 0); }

static int read_job_annotation(Scanner *s, void *pod) { return read_field(s, &((Pod *)pod)->job_annotation, 0); }

static int read_labels(Scanner *s, void *pod) { return read_object(s, ((Pod *)pod)->labels, 2, pod); }

static int read_annotations(Scanner *s, void *pod) { return read_object(s, ((Pod *)pod)->annotations, 1, pod); }

static const Member METADATA[] = {MEMBER("name", check_name), MEMBER("generateName", check_name),
                                  MEMBER("uid", read_uid), MEMBER("labels", read_labels),
                                  MEMBER("annotations", read_annotations),
                                  MEMBER("ownerReferences", read_owners)};

/* status.conditions: only its type matters (pod_from_dict iterates it). */
static int read_conditions(Scanner *s, void *pod) { return read_array(s, skip_item, pod); }

static const Member STATUS[] = {MEMBER("conditions", read_conditions)};

static int read_metadata(Scanner *s, void *pod) { return read_object(s, METADATA, 6, pod); }

static int read_spec(Scanner *s, void *pod) { return read_object(s, SPEC, 3, pod); }

static int read_status(Scanner *s, void *pod) { return read_object(s, STATUS, 1, pod); }

static const Member ROOT[] = {MEMBER("metadata", read_metadata), MEMBER("spec", read_spec),
                              MEMBER("status", read_status)};

static int read_root(Scanner *s, Pod *pod) {
    if (peek(s) != '{') return DECLINED; /* a pod is an object; a null is Python's to word */
    return read_object(s, ROOT, 3, pod);
}

const char read_pod_doc[] =
    "read_pod(text, offset, job_key, standby_key)\n"
    "--\n\n"
    "The pod whose JSON starts at text[offset], read for a scheduling decision: (end, uid, job label,\n"
    "standby-for label, job annotation, controller's name, containers, init containers, overhead memory),\n"
    "end being where the value and the whitespace after it end; containers as (request, limit) quantity\n"
    "strings or None, init containers as (request, limit, restartPolicy is Always), a label, annotation or\n"
    "owner None when absent. None when the reader is not sure to read it as orjson and\n"
    "guardgrid.records.pod_from_dict do (see guardgrid/_pod_reader.c): then read it with those.";

PyObject *kernel_read_pod(PyObject *self, PyObject *args) {
    Py_buffer text;
    Py_ssize_t offset;
    const char *job_key, *standby_key;
    Py_ssize_t job_key_length, standby_key_length;
    Pod pod;
    memset(&pod, 0, sizeof pod); /* every field ABSENT */
    if (!PyArg_ParseTuple(args, "y*ns#s#:read_pod", &text, &offset, &job_key, &job_key_length, &standby_key,
                          &standby_key_length)) {
        return NULL;
    }
    pod.labels[0] = (Member){job_key, job_key_length, read_job_label};
    pod.labels[1] = (Member){standby_key, standby_key_length, read_standby_label};
    pod.annotations[0] = (Member){job_key, job_key_length, read_job_annotation};
    PyObject *result = NULL;
    if (offset < 0 || offset > text.len) {
        PyBuffer_Release(&text);
        Py_RETURN_NONE;
    }
    Scanner scanner = {(const char *)text.buf, text.len, offset, 0};
    pod.containers = PyList_New(0);
    pod.inits = PyList_New(0);
    if (pod.containers == NULL || pod.inits == NULL) goto done;
    int status = read_root(&scanner, &pod);
    if (status == FAILED) goto done;
    if (status == DECLINED) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    peek(&scanner); /* the whitespace after the value is the pod's too, as in a slice orjson reads */
    PyObject *uid = pod.uid.state == STRING ? text_or_none(&scanner, &pod.uid) : PyUnicode_FromStringAndSize("", 0);
    PyObject *owner = pod.owner_found ? (pod.owner_name.state == STRING ? text_or_none(&scanner, &pod.owner_name)
                                                                        : PyUnicode_FromStringAndSize("", 0))
                                      : Py_NewRef(Py_None);
    PyObject *parts[] = {uid, owner, text_or_none(&scanner, &pod.job_label),
                         text_or_none(&scanner, &pod.standby_label), text_or_none(&scanner, &pod.job_annotation),
                         text_or_none(&scanner, &pod.overhead)};
    int complete = 1;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) complete &= parts[i] != NULL;
    if (complete) {
        result = Py_BuildValue("(nOOOOOOOO)", scanner.at, parts[0], parts[2], parts[3], parts[4], parts[1],
                               pod.containers, pod.inits, parts[5]);
    }
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) Py_XDECREF(parts[i]);
done:
    Py_XDECREF(pod.containers);
    Py_XDECREF(pod.inits);
    PyBuffer_Release(&text);
    return result;
}
