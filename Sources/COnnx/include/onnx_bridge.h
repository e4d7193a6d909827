/*
 * onnx_bridge.h — a plain C view of an ONNX ModelProto, backed by libonnx
 * (protobuf classes and onnx::checker). The Swift loader reads models only
 * through these functions; nothing here interprets the graph.
 *
 * Functions returning int: 0 = success, otherwise a message is written to
 * err (err_len bytes including the NUL).
 */
#ifndef ADAMANT_ONNX_BRIDGE_H
#define ADAMANT_ONNX_BRIDGE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct ox_model ox_model;   /**< an owned onnx::ModelProto */
typedef struct ox_tensor ox_tensor; /**< a borrowed onnx::TensorProto (lives as long as its model) */

/** Parses serialized ModelProto bytes. */
int ox_parse(const void *data, size_t len, ox_model **out, char *err, size_t err_len);
/** The same, streamed from an open file (read to its end in small blocks, never held whole). */
int ox_parse_fd(int fd, ox_model **out, char *err, size_t err_len);
/** Frees a model (NULL allowed). */
void ox_free(ox_model *m);
/**
 * Runs onnx::checker::check_model. Returns 0 when it passed, 1 when it
 * failed (err says why), 2 when it was skipped because the model's opset is
 * newer than this libonnx knows (err says so; the caller validates itself).
 */
int ox_check(const ox_model *m, char *err, size_t err_len);
/** Highest ai.onnx opset this libonnx knows. */
int64_t ox_max_known_opset(void);

int64_t ox_ir_version(const ox_model *m);
const char *ox_producer_name(const ox_model *m);
size_t ox_opset_count(const ox_model *m);
const char *ox_opset_domain(const ox_model *m, size_t i);
int64_t ox_opset_version(const ox_model *m, size_t i);
size_t ox_metadata_count(const ox_model *m);
const char *ox_metadata_key(const ox_model *m, size_t i);
const char *ox_metadata_value(const ox_model *m, size_t i);

/* Graph inputs / outputs (value infos). dim = -1 when symbolic or unknown. */
size_t ox_input_count(const ox_model *m);
const char *ox_input_name(const ox_model *m, size_t i);
int32_t ox_input_elem_type(const ox_model *m, size_t i);
int64_t ox_input_rank(const ox_model *m, size_t i); /**< -1 when no shape is given */
int64_t ox_input_dim(const ox_model *m, size_t i, size_t d);
size_t ox_output_count(const ox_model *m);
const char *ox_output_name(const ox_model *m, size_t i);
int64_t ox_output_rank(const ox_model *m, size_t i);
int64_t ox_output_dim(const ox_model *m, size_t i, size_t d);

/* Initializers. */
size_t ox_initializer_count(const ox_model *m);
const ox_tensor *ox_initializer(const ox_model *m, size_t i);
/** Frees the data of initializer i (raw_data and the typed fields) once it has been converted:
 * loading then never holds the file's weights twice. Its name, type and dims stay. */
void ox_initializer_release_data(ox_model *m, size_t i);

/* Nodes. */
size_t ox_node_count(const ox_model *m);
const char *ox_node_op_type(const ox_model *m, size_t n);
const char *ox_node_name(const ox_model *m, size_t n);
const char *ox_node_domain(const ox_model *m, size_t n);
size_t ox_node_input_count(const ox_model *m, size_t n);
const char *ox_node_input(const ox_model *m, size_t n, size_t i); /**< "" = omitted optional input */
size_t ox_node_output_count(const ox_model *m, size_t n);
const char *ox_node_output(const ox_model *m, size_t n, size_t i);

/* Attributes of node n. Types follow onnx::AttributeProto::AttributeType (1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 6 FLOATS, 7 INTS, 8 STRINGS). */
size_t ox_attr_count(const ox_model *m, size_t n);
const char *ox_attr_name(const ox_model *m, size_t n, size_t a);
int32_t ox_attr_type(const ox_model *m, size_t n, size_t a);
float ox_attr_f(const ox_model *m, size_t n, size_t a);
int64_t ox_attr_i(const ox_model *m, size_t n, size_t a);
const char *ox_attr_s(const ox_model *m, size_t n, size_t a);
size_t ox_attr_floats_count(const ox_model *m, size_t n, size_t a);
float ox_attr_floats_at(const ox_model *m, size_t n, size_t a, size_t k);
size_t ox_attr_ints_count(const ox_model *m, size_t n, size_t a);
int64_t ox_attr_ints_at(const ox_model *m, size_t n, size_t a, size_t k);
const ox_tensor *ox_attr_tensor(const ox_model *m, size_t n, size_t a); /**< NULL unless type 4 */

/* Tensors. Data types follow onnx::TensorProto::DataType (1 FLOAT, 6 INT32, 7 INT64, 11 DOUBLE ...). */
const char *ox_tensor_name(const ox_tensor *t);
int32_t ox_tensor_data_type(const ox_tensor *t);
size_t ox_tensor_rank(const ox_tensor *t);
int64_t ox_tensor_dim(const ox_tensor *t, size_t d);
/**
 * Number of elements the dims declare; fails for negative dims, overflow,
 * external data, or stored data whose size does not match the dims.
 */
int ox_tensor_numel(const ox_tensor *t, size_t *out, char *err, size_t err_len);
/** Converts the data (float, double, int32, int64, ...) to float; n must equal numel. */
int ox_tensor_to_float(const ox_tensor *t, float *out, size_t n, char *err, size_t err_len);
/** A FLOAT tensor's raw little-endian data holding at least n floats, or NULL (other types, typed
 * fields): callers may copy it themselves, e.g. on several threads. Unaligned: copy with memcpy. */
const float *ox_tensor_raw_floats(const ox_tensor *t, size_t n);
/** Converts integer data to int64; n must equal numel. */
int ox_tensor_to_int64(const ox_tensor *t, int64_t *out, size_t n, char *err, size_t err_len);

/* Editing (used to write adamant's single-file multi-domain format). */
/** Deep copy. */
ox_model *ox_clone(const ox_model *m);
/** Adds a float initializer, replacing one of the same name. */
int ox_set_initializer_float(ox_model *m, const char *name, const int64_t *dims, size_t rank,
                             const float *data, char *err, size_t err_len);
/** Renames input i of node n. */
int ox_set_node_input(ox_model *m, size_t n, size_t i, const char *name, char *err, size_t err_len);
/** Sets metadata_props[key] = value (replacing). */
void ox_set_metadata(ox_model *m, const char *key, const char *value);
/** Removes nodes none of whose outputs is used or a graph output, then unused initializers (repeatedly). */
void ox_prune_unused(ox_model *m);
/** Serializes to a file. */
int ox_save(const ox_model *m, const char *path, char *err, size_t err_len);
/** Serializes to a malloc'ed buffer (*out freed with free()). */
int ox_serialize(const ox_model *m, void **out, size_t *len, char *err, size_t err_len);


/* Building a model from scratch (used by the ResNet synthesizer). */
/** A new empty model: ir_version, one ai.onnx opset import, producer name, graph name. */
ox_model *ox_new_model(int64_t ir_version, int64_t opset, const char *producer, const char *graph_name);
/**
 * Adds a graph input (is_output = 0) or output (1) of element type elem_type (1 = FLOAT) and
 * the given dims; a negative dim becomes the symbolic dimension dim_param (e.g. "batch").
 */
int ox_add_value_info(ox_model *m, int is_output, const char *name, int32_t elem_type, const int64_t *dims,
                      size_t rank, const char *dim_param, char *err, size_t err_len);
/** Appends a node (domain ai.onnx) and returns its index; "" in inputs = an omitted optional input. */
size_t ox_add_node(ox_model *m, const char *op_type, const char *name, const char *const *inputs, size_t n_inputs,
                   const char *const *outputs, size_t n_outputs);
/** Adds an INT attribute to node n. */
void ox_node_add_attr_int(ox_model *m, size_t n, const char *name, int64_t value);
/** Adds an INTS attribute to node n. */
void ox_node_add_attr_ints(ox_model *m, size_t n, const char *name, const int64_t *values, size_t count);
/** Adds a FLOAT attribute to node n. */
void ox_node_add_attr_float(ox_model *m, size_t n, const char *name, float value);
/** Appends a float initializer (no search for an existing name: the caller keeps names unique). */
int ox_add_initializer_float(ox_model *m, const char *name, const int64_t *dims, size_t rank, const float *data,
                             char *err, size_t err_len);
/** Appends an int64 initializer (e.g. a Reshape's shape); names as for ox_add_initializer_float. */
int ox_add_initializer_int64(ox_model *m, const char *name, const int64_t *dims, size_t rank, const int64_t *data,
                             char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
