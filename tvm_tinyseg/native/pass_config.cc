// Register TinySeg's PassContext config options ("tinyseg.*") with TVM's pass-config registry.
//
// TVM accepts only registered keys in PassContext(config=...) and has no Python API to register
// one. PassContext::RegisterConfigOption is a TVM_DLL static member exported from
// libtvm_compiler.so, and the pip wheel ships no compiler headers, so this file re-declares the
// class with just that member: the linker resolves the mangled symbol
//   tvm::transform::PassContext::RegisterConfigOption(char const*, tvm::ffi::String,
//                                                     std::function<tvm::ffi::Any (tvm::ffi::Any)>)
// This depends on TVM's C++ ABI: tvm_tinyseg/pass_config.py, which owns the table of options,
// builds it on demand with tvm_ffi.cpp.load_inline, once per TVM version (tvm_ffi caches it).
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>

namespace tvm {
namespace transform {
class PassContext {
 public:
  static void RegisterConfigOption(const char* key, ffi::String value_type_str,
                                   std::function<ffi::Any(ffi::Any)> legalization);
};
}  // namespace transform
}  // namespace tvm

namespace {

using tvm::ffi::Any;
using tvm::ffi::String;
using tvm::ffi::TypeIndex;

// Python-facing name of the value's type, for error messages.
std::string TypeName(const Any& value) {
  switch (value.type_index()) {
    case TypeIndex::kTVMFFINone:
      return "None";
    case TypeIndex::kTVMFFIInt:
      return "int";
    case TypeIndex::kTVMFFIBool:
      return "bool";
    case TypeIndex::kTVMFFIFloat:
      return "float";
    case TypeIndex::kTVMFFISmallStr:
    case TypeIndex::kTVMFFIStr:
      return "str";
    default:
      return value.GetTypeKey();
  }
}

[[noreturn]] void Reject(const std::string& key, const char* expected, const Any& value) {
  // The error kind is registered on the Python side (tvm_tinyseg.pass_config), so it comes back
  // to Python as a TinySegError (and TypeError) carrying this one line.
  TVM_FFI_THROW(TinySegOptionTypeError) << "PassContext option " << key << " expects " << expected
                                        << ", got " << TypeName(value);
}

// Legalizers: accept a value of the declared type (or an unambiguous spelling of it) and return
// it in canonical form; reject anything else naming the key and the expected type.
std::function<Any(Any)> IntLegalizer(std::string key) {
  return [key](Any value) -> Any {
    // Only a real integer: bool is an int in Python, but True as a byte count is a mistake.
    if (value.type_index() != TypeIndex::kTVMFFIInt) Reject(key, "int", value);
    return value;
  };
}

std::function<Any(Any)> BoolLegalizer(std::string key) {
  return [key](Any value) -> Any {
    if (value.type_index() == TypeIndex::kTVMFFIBool) return value;
    if (value.type_index() == TypeIndex::kTVMFFIInt) {
      int64_t v = value.cast<int64_t>();
      if (v == 0 || v == 1) return Any(v == 1);
    }
    Reject(key, "bool", value);
  };
}

std::function<Any(Any)> StrLegalizer(std::string key) {
  return [key](Any value) -> Any {
    if (value.type_index() == TypeIndex::kTVMFFISmallStr || value.type_index() == TypeIndex::kTVMFFIStr) {
      return value;
    }
    Reject(key, "str", value);
  };
}

// The type TVM already holds for `key`, or nullopt if the key is not registered. Registering a key
// twice trips an ICHECK in TVM's PassConfigManager, so callers look first.
std::optional<std::string> RegisteredType(const std::string& key) {
  auto list_configs = tvm::ffi::Function::GetGlobal("transform.ListConfigs");
  if (!list_configs.has_value()) TVM_FFI_THROW(RuntimeError) << "transform.ListConfigs is not registered";
  auto configs = (*list_configs)().cast<tvm::ffi::Map<String, tvm::ffi::Map<String, String>>>();
  auto it = configs.find(String(key));
  if (it == configs.end()) return std::nullopt;
  auto type = (*it).second.find(String("type"));
  return type == (*it).second.end() ? std::string() : std::string((*type).second);
}

}  // namespace

// Register PassContext option `key` holding a value of `type` ("int", "bool" or "str"); false if it
// was already registered with that type (nothing done). Exported to Python by tvm_ffi.cpp.load_inline.
bool register_config_option(String key, String type) {
  const std::string key_str(key), type_str(type);
  std::function<Any(Any)> legalizer;
  if (type_str == "int") {
    legalizer = IntLegalizer(key_str);
  } else if (type_str == "bool") {
    legalizer = BoolLegalizer(key_str);
  } else if (type_str == "str") {
    legalizer = StrLegalizer(key_str);
  } else {
    TVM_FFI_THROW(ValueError) << "PassContext option " << key_str << ": unknown type '" << type_str
                              << "' (int, bool or str)";
  }
  if (auto existing = RegisteredType(key_str)) {
    if (*existing == type_str) return false;
    TVM_FFI_THROW(ValueError) << "PassContext option " << key_str << " is already registered with type "
                              << *existing << ", not " << type_str;
  }
  // TVM copies the key into its registry; the legalizer owns its copy too.
  tvm::transform::PassContext::RegisterConfigOption(key_str.c_str(), type, std::move(legalizer));
  return true;
}
