// onnx_bridge.cc — implementation of onnx_bridge.h on top of Debian's libonnx.
#include "onnx_bridge.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <type_traits>
#include <set>
#include <string>

struct ox_model {
    onnx::ModelProto proto;
};

namespace {

void set_err(char *err, size_t err_len, const std::string &msg) {
    if (err == nullptr || err_len == 0) return;
    size_t n = msg.size() < err_len - 1 ? msg.size() : err_len - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

const onnx::GraphProto &G(const ox_model *m) { return m->proto.graph(); }
const onnx::TensorProto *T(const ox_tensor *t) { return reinterpret_cast<const onnx::TensorProto *>(t); }
const onnx::AttributeProto &A(const ox_model *m, size_t n, size_t a) { return G(m).node((int)n).attribute((int)a); }

int64_t vi_rank(const onnx::ValueInfoProto &v) {
    if (!v.has_type() || !v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return -1;
    return v.type().tensor_type().shape().dim_size();
}
int64_t vi_dim(const onnx::ValueInfoProto &v, size_t d) {
    if (vi_rank(v) <= (int64_t)d) return -1;
    const auto &dim = v.type().tensor_type().shape().dim((int)d);
    return dim.has_dim_value() ? dim.dim_value() : -1;
}

size_t elem_size(int32_t dt) {
    switch (dt) {
    case onnx::TensorProto::FLOAT: case onnx::TensorProto::INT32: case onnx::TensorProto::UINT32: return 4;
    case onnx::TensorProto::DOUBLE: case onnx::TensorProto::INT64: case onnx::TensorProto::UINT64: return 8;
    case onnx::TensorProto::INT16: case onnx::TensorProto::UINT16: case onnx::TensorProto::FLOAT16: case onnx::TensorProto::BFLOAT16: return 2;
    case onnx::TensorProto::INT8: case onnx::TensorProto::UINT8: case onnx::TensorProto::BOOL: return 1;
    default: return 0;
    }
}

// Elements actually stored (raw_data or the typed field), or -1 if the type is unsupported.
int64_t stored_count(const onnx::TensorProto &t) {
    size_t es = elem_size(t.data_type());
    if (es == 0) return -1;
    if (t.has_raw_data()) return (int64_t)(t.raw_data().size() / es);
    switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: return t.float_data_size();
    case onnx::TensorProto::DOUBLE: return t.double_data_size();
    case onnx::TensorProto::INT64: return t.int64_data_size();
    case onnx::TensorProto::UINT32: case onnx::TensorProto::UINT64: return t.uint64_data_size();
    default: return t.int32_data_size(); // INT32, INT16, INT8, UINT8, UINT16, BOOL, FLOAT16, BFLOAT16
    }
}

std::string tname(const onnx::TensorProto &t) { return t.name().empty() ? std::string("<unnamed tensor>") : t.name(); }

template <typename Out> int convert(const onnx::TensorProto &t, Out *out, size_t n, char *err, size_t err_len) {
    size_t numel = 0;
    if (ox_tensor_numel(reinterpret_cast<const ox_tensor *>(&t), &numel, err, err_len) != 0) return 1;
    if (numel != n) {
        set_err(err, err_len, "tensor '" + tname(t) + "': expected " + std::to_string(n) + " elements, it has " + std::to_string(numel));
        return 1;
    }
    const int32_t dt = t.data_type();
    if (t.has_raw_data()) {
        const char *raw = t.raw_data().data();
        if (std::is_same<Out, float>::value && dt == onnx::TensorProto::FLOAT) {
            std::memcpy(out, raw, 4 * n);  // the common case, one copy (numel checked the size)
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            switch (dt) {
            case onnx::TensorProto::FLOAT: { float v; std::memcpy(&v, raw + 4 * i, 4); out[i] = (Out)v; break; }
            case onnx::TensorProto::DOUBLE: { double v; std::memcpy(&v, raw + 8 * i, 8); out[i] = (Out)v; break; }
            case onnx::TensorProto::INT64: { int64_t v; std::memcpy(&v, raw + 8 * i, 8); out[i] = (Out)v; break; }
            case onnx::TensorProto::INT32: { int32_t v; std::memcpy(&v, raw + 4 * i, 4); out[i] = (Out)v; break; }
            case onnx::TensorProto::UINT8: case onnx::TensorProto::BOOL: out[i] = (Out)(uint8_t)raw[i]; break;
            case onnx::TensorProto::INT8: out[i] = (Out)(int8_t)raw[i]; break;
            default:
                set_err(err, err_len, "tensor '" + tname(t) + "': data type " + std::to_string(dt) + " is not supported");
                return 1;
            }
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case onnx::TensorProto::FLOAT: out[i] = (Out)t.float_data((int)i); break;
        case onnx::TensorProto::DOUBLE: out[i] = (Out)t.double_data((int)i); break;
        case onnx::TensorProto::INT64: out[i] = (Out)t.int64_data((int)i); break;
        case onnx::TensorProto::INT32: case onnx::TensorProto::INT8: case onnx::TensorProto::UINT8: case onnx::TensorProto::BOOL:
            out[i] = (Out)t.int32_data((int)i); break;
        default:
            set_err(err, err_len, "tensor '" + tname(t) + "': data type " + std::to_string(dt) + " is not supported");
            return 1;
        }
    }
    return 0;
}

const std::string corrupt = "not a valid ONNX protobuf (truncated or corrupt file)";

/// Parses with `parse` (which returns "" or what went wrong) into a new model with a graph.
template <typename F> int parse_model(F parse, ox_model **out, char *err, size_t err_len) {
    try {
        std::unique_ptr<ox_model> m(new ox_model());  // freed on every error path, a throw included
        std::string why = parse(m->proto);
        if (why.empty() && !m->proto.has_graph()) why = "ONNX model has no graph";
        if (!why.empty()) {
            set_err(err, err_len, why);
            return 1;
        }
        *out = m.release();
        return 0;
    } catch (const std::exception &e) {
        set_err(err, err_len, std::string("ONNX parse failed: ") + e.what());
        return 1;
    } catch (...) {
        set_err(err, err_len, "ONNX parse failed");
        return 1;
    }
}

} // namespace

extern "C" {

int ox_parse(const void *data, size_t len, ox_model **out, char *err, size_t err_len) {
    if (out == nullptr) { set_err(err, err_len, "out is NULL"); return 1; }
    *out = nullptr;
    if (data == nullptr && len > 0) { set_err(err, err_len, "data is NULL"); return 1; }
    if (len == 0) { set_err(err, err_len, "empty file: not an ONNX model"); return 1; }
    if (len > (size_t)std::numeric_limits<int>::max()) { set_err(err, err_len, "model larger than 2 GiB is not supported"); return 1; }
    return parse_model([&](onnx::ModelProto &p) { return p.ParseFromArray(data, (int)len) ? std::string() : corrupt; },
                       out, err, err_len);
}

int ox_parse_fd(int fd, ox_model **out, char *err, size_t err_len) {
    if (out == nullptr) { set_err(err, err_len, "out is NULL"); return 1; }
    *out = nullptr;
    return parse_model([&](onnx::ModelProto &p) {
        // Streamed from the file in small blocks: no buffer holding the whole file.
        google::protobuf::io::FileInputStream in(fd, 1 << 20);
        if (p.ParseFromZeroCopyStream(&in)) return std::string();
        return in.GetErrno() ? std::string("read error: ") + std::strerror(in.GetErrno()) : corrupt;
    }, out, err, err_len);
}

void ox_free(ox_model *m) { delete m; }

int64_t ox_max_known_opset(void) {
    return onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map().at(onnx::ONNX_DOMAIN).second;
}

int ox_check(const ox_model *m, char *err, size_t err_len) {
    if (m == nullptr) { set_err(err, err_len, "model is NULL"); return 1; }
    int64_t maxKnown = ox_max_known_opset();
    for (const auto &op : m->proto.opset_import()) {
        if ((op.domain().empty() || op.domain() == "ai.onnx") && op.version() > maxKnown) {
            set_err(err, err_len, "opset " + std::to_string(op.version()) + " is newer than libonnx's " + std::to_string(maxKnown) + "; checker skipped");
            return 2;
        }
    }
    try {
        onnx::checker::check_model(m->proto);
        return 0;
    } catch (const std::exception &e) {
        set_err(err, err_len, e.what());
        return 1;
    } catch (...) {
        set_err(err, err_len, "onnx checker failed");
        return 1;
    }
}

int64_t ox_ir_version(const ox_model *m) { return m->proto.ir_version(); }
const char *ox_producer_name(const ox_model *m) { return m->proto.producer_name().c_str(); }
size_t ox_opset_count(const ox_model *m) { return (size_t)m->proto.opset_import_size(); }
const char *ox_opset_domain(const ox_model *m, size_t i) { return m->proto.opset_import((int)i).domain().c_str(); }
int64_t ox_opset_version(const ox_model *m, size_t i) { return m->proto.opset_import((int)i).version(); }
size_t ox_metadata_count(const ox_model *m) { return (size_t)m->proto.metadata_props_size(); }
const char *ox_metadata_key(const ox_model *m, size_t i) { return m->proto.metadata_props((int)i).key().c_str(); }
const char *ox_metadata_value(const ox_model *m, size_t i) { return m->proto.metadata_props((int)i).value().c_str(); }

size_t ox_input_count(const ox_model *m) { return (size_t)G(m).input_size(); }
const char *ox_input_name(const ox_model *m, size_t i) { return G(m).input((int)i).name().c_str(); }
int32_t ox_input_elem_type(const ox_model *m, size_t i) {
    const auto &v = G(m).input((int)i);
    return (v.has_type() && v.type().has_tensor_type()) ? v.type().tensor_type().elem_type() : 0;
}
int64_t ox_input_rank(const ox_model *m, size_t i) { return vi_rank(G(m).input((int)i)); }
int64_t ox_input_dim(const ox_model *m, size_t i, size_t d) { return vi_dim(G(m).input((int)i), d); }
size_t ox_output_count(const ox_model *m) { return (size_t)G(m).output_size(); }
const char *ox_output_name(const ox_model *m, size_t i) { return G(m).output((int)i).name().c_str(); }
int64_t ox_output_rank(const ox_model *m, size_t i) { return vi_rank(G(m).output((int)i)); }
int64_t ox_output_dim(const ox_model *m, size_t i, size_t d) { return vi_dim(G(m).output((int)i), d); }

size_t ox_initializer_count(const ox_model *m) { return (size_t)G(m).initializer_size(); }
const ox_tensor *ox_initializer(const ox_model *m, size_t i) {
    return reinterpret_cast<const ox_tensor *>(&G(m).initializer((int)i));
}

void ox_initializer_release_data(ox_model *m, size_t i) {
    if (m == nullptr || i >= (size_t)m->proto.graph().initializer_size()) return;
    onnx::TensorProto *t = m->proto.mutable_graph()->mutable_initializer((int)i);
    std::string().swap(*t->mutable_raw_data());  // clear() would keep the capacity
    onnx::TensorProto empty;
    t->mutable_float_data()->Swap(empty.mutable_float_data());
    t->mutable_int64_data()->Swap(empty.mutable_int64_data());
    t->mutable_int32_data()->Swap(empty.mutable_int32_data());
    t->mutable_double_data()->Swap(empty.mutable_double_data());
}

size_t ox_node_count(const ox_model *m) { return (size_t)G(m).node_size(); }
const char *ox_node_op_type(const ox_model *m, size_t n) { return G(m).node((int)n).op_type().c_str(); }
const char *ox_node_name(const ox_model *m, size_t n) { return G(m).node((int)n).name().c_str(); }
const char *ox_node_domain(const ox_model *m, size_t n) { return G(m).node((int)n).domain().c_str(); }
size_t ox_node_input_count(const ox_model *m, size_t n) { return (size_t)G(m).node((int)n).input_size(); }
const char *ox_node_input(const ox_model *m, size_t n, size_t i) { return G(m).node((int)n).input((int)i).c_str(); }
size_t ox_node_output_count(const ox_model *m, size_t n) { return (size_t)G(m).node((int)n).output_size(); }
const char *ox_node_output(const ox_model *m, size_t n, size_t i) { return G(m).node((int)n).output((int)i).c_str(); }

size_t ox_attr_count(const ox_model *m, size_t n) { return (size_t)G(m).node((int)n).attribute_size(); }
const char *ox_attr_name(const ox_model *m, size_t n, size_t a) { return A(m, n, a).name().c_str(); }
int32_t ox_attr_type(const ox_model *m, size_t n, size_t a) {
    const auto &at = A(m, n, a);
    if (at.type() != 0) return at.type();
    // IR < 3 models may leave `type` unset: infer it from the populated field.
    if (at.has_f()) return onnx::AttributeProto::FLOAT;
    if (at.has_i()) return onnx::AttributeProto::INT;
    if (at.has_s()) return onnx::AttributeProto::STRING;
    if (at.has_t()) return onnx::AttributeProto::TENSOR;
    if (at.floats_size() > 0) return onnx::AttributeProto::FLOATS;
    if (at.ints_size() > 0) return onnx::AttributeProto::INTS;
    if (at.strings_size() > 0) return onnx::AttributeProto::STRINGS;
    return 0;
}
float ox_attr_f(const ox_model *m, size_t n, size_t a) { return A(m, n, a).f(); }
int64_t ox_attr_i(const ox_model *m, size_t n, size_t a) { return A(m, n, a).i(); }
const char *ox_attr_s(const ox_model *m, size_t n, size_t a) { return A(m, n, a).s().c_str(); }
size_t ox_attr_floats_count(const ox_model *m, size_t n, size_t a) { return (size_t)A(m, n, a).floats_size(); }
float ox_attr_floats_at(const ox_model *m, size_t n, size_t a, size_t k) { return A(m, n, a).floats((int)k); }
size_t ox_attr_ints_count(const ox_model *m, size_t n, size_t a) { return (size_t)A(m, n, a).ints_size(); }
int64_t ox_attr_ints_at(const ox_model *m, size_t n, size_t a, size_t k) { return A(m, n, a).ints((int)k); }
const ox_tensor *ox_attr_tensor(const ox_model *m, size_t n, size_t a) {
    const auto &at = A(m, n, a);
    return at.has_t() ? reinterpret_cast<const ox_tensor *>(&at.t()) : nullptr;
}

const char *ox_tensor_name(const ox_tensor *t) { return T(t)->name().c_str(); }
int32_t ox_tensor_data_type(const ox_tensor *t) { return T(t)->data_type(); }
size_t ox_tensor_rank(const ox_tensor *t) { return (size_t)T(t)->dims_size(); }
int64_t ox_tensor_dim(const ox_tensor *t, size_t d) { return T(t)->dims((int)d); }

int ox_tensor_numel(const ox_tensor *tp, size_t *out, char *err, size_t err_len) {
    const onnx::TensorProto &t = *T(tp);
    if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0) {
        set_err(err, err_len, "tensor '" + tname(t) + "' uses external data, which adamant does not load");
        return 1;
    }
    size_t n = 1;
    for (int d = 0; d < t.dims_size(); d++) {
        int64_t v = t.dims(d);
        if (v < 0) { set_err(err, err_len, "tensor '" + tname(t) + "' has a negative dimension"); return 1; }
        if (v != 0 && n > (size_t)std::numeric_limits<int32_t>::max() / (size_t)v) {
            set_err(err, err_len, "tensor '" + tname(t) + "' declares too many elements");
            return 1;
        }
        n *= (size_t)v;
    }
    int64_t stored = stored_count(t);
    if (stored < 0) {
        set_err(err, err_len, "tensor '" + tname(t) + "': data type " + std::to_string(t.data_type()) + " is not supported");
        return 1;
    }
    if ((size_t)stored != n) {
        set_err(err, err_len, "tensor '" + tname(t) + "' declares " + std::to_string(n) + " elements but stores " + std::to_string(stored));
        return 1;
    }
    *out = n;
    return 0;
}

int ox_tensor_to_float(const ox_tensor *t, float *out, size_t n, char *err, size_t err_len) {
    return convert<float>(*T(t), out, n, err, err_len);
}
const float *ox_tensor_raw_floats(const ox_tensor *t, size_t n) {
    const onnx::TensorProto &p = *T(t);
    if (p.data_type() != onnx::TensorProto::FLOAT || !p.has_raw_data() || p.raw_data().size() < 4 * n) return nullptr;
    return reinterpret_cast<const float *>(p.raw_data().data());
}
int ox_tensor_to_int64(const ox_tensor *t, int64_t *out, size_t n, char *err, size_t err_len) {
    int32_t dt = T(t)->data_type();
    if (dt == onnx::TensorProto::FLOAT || dt == onnx::TensorProto::DOUBLE) {
        set_err(err, err_len, "tensor '" + tname(*T(t)) + "' must hold integers");
        return 1;
    }
    return convert<int64_t>(*T(t), out, n, err, err_len);
}

ox_model *ox_clone(const ox_model *m) {
    auto *c = new ox_model();
    c->proto = m->proto;
    return c;
}

int ox_set_initializer_float(ox_model *m, const char *name, const int64_t *dims, size_t rank, const float *data,
                             char *err, size_t err_len) {
    if (!name || (!dims && rank) ) { set_err(err, err_len, "bad arguments"); return 1; }
    size_t n = 1;
    for (size_t d = 0; d < rank; d++) n *= (size_t)dims[d];
    onnx::TensorProto *t = nullptr;
    auto *g = m->proto.mutable_graph();
    for (int i = 0; i < g->initializer_size(); i++)
        if (g->initializer(i).name() == name) t = g->mutable_initializer(i);
    if (t == nullptr) t = g->add_initializer();
    t->Clear();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (size_t d = 0; d < rank; d++) t->add_dims(dims[d]);
    t->set_raw_data(std::string(reinterpret_cast<const char *>(data), n * sizeof(float)));
    return 0;
}

int ox_set_node_input(ox_model *m, size_t n, size_t i, const char *name, char *err, size_t err_len) {
    auto *g = m->proto.mutable_graph();
    if ((int)n >= g->node_size() || (int)i >= g->node((int)n).input_size()) { set_err(err, err_len, "node input out of range"); return 1; }
    g->mutable_node((int)n)->set_input((int)i, name);
    return 0;
}

void ox_set_metadata(ox_model *m, const char *key, const char *value) {
    for (int i = 0; i < m->proto.metadata_props_size(); i++) {
        if (m->proto.metadata_props(i).key() == key) { m->proto.mutable_metadata_props(i)->set_value(value); return; }
    }
    auto *p = m->proto.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
}

void ox_prune_unused(ox_model *m) {
    auto *g = m->proto.mutable_graph();
    bool changed = true;
    while (changed) {
        changed = false;
        std::set<std::string> used;
        for (const auto &o : g->output()) used.insert(o.name());
        for (const auto &n : g->node()) for (const auto &in : n.input()) used.insert(in);
        for (int i = g->node_size() - 1; i >= 0; i--) {
            bool live = false;
            for (const auto &o : g->node(i).output()) if (used.count(o)) live = true;
            if (!live) { g->mutable_node()->DeleteSubrange(i, 1); changed = true; }
        }
        if (changed) continue;
        for (int i = g->initializer_size() - 1; i >= 0; i--) {
            if (!used.count(g->initializer(i).name())) {
                // An initializer that is also a graph input stays: removing it would change the interface.
                bool isInput = false;
                for (const auto &in : g->input()) if (in.name() == g->initializer(i).name()) isInput = true;
                if (!isInput) { g->mutable_initializer()->DeleteSubrange(i, 1); changed = true; }
            }
        }
    }
}

int ox_save(const ox_model *m, const char *path, char *err, size_t err_len) {
    try {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        if (!f) { set_err(err, err_len, std::string("cannot open '") + path + "' for writing"); return 1; }
        if (!m->proto.SerializeToOstream(&f)) { set_err(err, err_len, "serialization failed"); return 1; }
        f.close();
        if (!f) { set_err(err, err_len, std::string("write to '") + path + "' failed"); return 1; }
        return 0;
    } catch (const std::exception &e) {
        set_err(err, err_len, e.what());
        return 1;
    }
}

int ox_serialize(const ox_model *m, void **out, size_t *len, char *err, size_t err_len) {
    try {
        std::string s;
        if (!m->proto.SerializeToString(&s)) { set_err(err, err_len, "serialization failed"); return 1; }
        void *buf = std::malloc(s.size() ? s.size() : 1);
        if (!buf) { set_err(err, err_len, "out of memory"); return 1; }
        std::memcpy(buf, s.data(), s.size());
        *out = buf;
        *len = s.size();
        return 0;
    } catch (const std::exception &e) {
        set_err(err, err_len, e.what());
        return 1;
    }
}

ox_model *ox_new_model(int64_t ir_version, int64_t opset, const char *producer, const char *graph_name) {
    auto *m = new ox_model();
    m->proto.set_ir_version(ir_version);
    m->proto.set_producer_name(producer ? producer : "");
    auto *op = m->proto.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    m->proto.mutable_graph()->set_name(graph_name ? graph_name : "");
    return m;
}

int ox_add_value_info(ox_model *m, int is_output, const char *name, int32_t elem_type, const int64_t *dims,
                      size_t rank, const char *dim_param, char *err, size_t err_len) {
    if (!m || !name || (!dims && rank)) { set_err(err, err_len, "bad arguments"); return 1; }
    auto *g = m->proto.mutable_graph();
    onnx::ValueInfoProto *v = is_output ? g->add_output() : g->add_input();
    v->set_name(name);
    auto *tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem_type);
    auto *shape = tt->mutable_shape();
    for (size_t d = 0; d < rank; d++) {
        auto *dim = shape->add_dim();
        if (dims[d] < 0) dim->set_dim_param(dim_param ? dim_param : "N");
        else dim->set_dim_value(dims[d]);
    }
    return 0;
}

size_t ox_add_node(ox_model *m, const char *op_type, const char *name, const char *const *inputs, size_t n_inputs,
                   const char *const *outputs, size_t n_outputs) {
    auto *g = m->proto.mutable_graph();
    auto *n = g->add_node();
    n->set_op_type(op_type);
    if (name) n->set_name(name);
    for (size_t i = 0; i < n_inputs; i++) n->add_input(inputs[i]);
    for (size_t i = 0; i < n_outputs; i++) n->add_output(outputs[i]);
    return (size_t)(g->node_size() - 1);
}

void ox_node_add_attr_int(ox_model *m, size_t n, const char *name, int64_t value) {
    auto *a = m->proto.mutable_graph()->mutable_node((int)n)->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(value);
}

void ox_node_add_attr_ints(ox_model *m, size_t n, const char *name, const int64_t *values, size_t count) {
    auto *a = m->proto.mutable_graph()->mutable_node((int)n)->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (size_t k = 0; k < count; k++) a->add_ints(values[k]);
}

void ox_node_add_attr_float(ox_model *m, size_t n, const char *name, float value) {
    auto *a = m->proto.mutable_graph()->mutable_node((int)n)->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(value);
}

/// An initializer of `rank` dims and their product of `elem`-byte elements of ONNX type `type`, stored raw.
static int add_initializer(ox_model *m, const char *name, const int64_t *dims, size_t rank, const void *data, size_t elem,
                           onnx::TensorProto::DataType type, char *err, size_t err_len) {
    if (!m || !name || (!dims && rank)) { set_err(err, err_len, "bad arguments"); return 1; }
    size_t n = 1;
    for (size_t d = 0; d < rank; d++) {
        if (dims[d] < 0) { set_err(err, err_len, std::string("initializer '") + name + "' has a negative dimension"); return 1; }
        n *= (size_t)dims[d];
    }
    if (n && !data) { set_err(err, err_len, "data is NULL"); return 1; }
    try {
        auto *t = m->proto.mutable_graph()->add_initializer();
        t->set_name(name);
        t->set_data_type(type);
        for (size_t d = 0; d < rank; d++) t->add_dims(dims[d]);
        t->mutable_raw_data()->assign(reinterpret_cast<const char *>(data), n * elem);
        return 0;
    } catch (const std::exception &e) {
        set_err(err, err_len, e.what());
        return 1;
    }
}

int ox_add_initializer_float(ox_model *m, const char *name, const int64_t *dims, size_t rank, const float *data,
                             char *err, size_t err_len) {
    return add_initializer(m, name, dims, rank, data, sizeof(float), onnx::TensorProto::FLOAT, err, err_len);
}

int ox_add_initializer_int64(ox_model *m, const char *name, const int64_t *dims, size_t rank, const int64_t *data,
                             char *err, size_t err_len) {
    return add_initializer(m, name, dims, rank, data, sizeof(int64_t), onnx::TensorProto::INT64, err, err_len);
}

} // extern "C"
