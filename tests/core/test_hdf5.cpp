#include <catch2/catch.hpp>

#include "core/hdf5_file.h"
#include "tests/test_support.h"

#include <hdf5.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using Catch::Contains;
using ef::H5File;

namespace {

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

torch::Tensor sample(torch::ScalarType dtype, torch::IntArrayRef shape) {
  switch (dtype) {
    case torch::kBool: return torch::rand(shape) > 0.5;
    case torch::kUInt8: return torch::randint(0, 256, shape, torch::kUInt8);
    case torch::kInt32: return torch::randint(-100000, 100000, shape, torch::kInt32);
    case torch::kInt64: return torch::randint(-(int64_t{1} << 40), int64_t{1} << 40, shape, torch::kInt64);
    default: return torch::randn(shape, dtype);
  }
}

void write_dataset_file(const fs::path& path) {
  H5File f(path, H5File::Mode::Create);
  f.write("train/images", torch::arange(200000, torch::kInt32).reshape({1000, 200}));
  f.set_attr("schema_version", int64_t{3});
}

}  // namespace

TEST_CASE("hdf5: every supported dtype and shape round-trips", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "data.h5";
  const std::vector<torch::ScalarType> dtypes = {torch::kUInt8, torch::kInt32, torch::kInt64,
                                                 torch::kFloat32, torch::kFloat64, torch::kBool};
  const std::vector<std::vector<int64_t>> shapes = {{}, {7}, {3, 4, 5}, {0, 3}, {2, 1, 1, 6}};
  std::vector<std::pair<std::string, torch::Tensor>> written;
  {
    H5File f(path, H5File::Mode::Create);
    for (auto dtype : dtypes) {
      for (size_t s = 0; s < shapes.size(); ++s) {
        const std::string name = std::string("d/") + c10::toString(dtype) + "_" + std::to_string(s);
        written.emplace_back(name, sample(dtype, shapes[s]));
        f.write(name, written.back().second);
      }
    }
  }
  const H5File f(path, H5File::Mode::Read);
  for (const auto& [name, expected] : written) {
    CAPTURE(name);
    const auto back = f.read(name);
    CHECK(back.scalar_type() == expected.scalar_type());
    CHECK(back.sizes() == expected.sizes());
    CHECK(torch::equal(back, expected));
    CHECK(f.shape(name) == expected.sizes().vec());
  }
}

TEST_CASE("hdf5: non-contiguous tensors and nested groups and replacement", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "data.h5";
  const auto base = torch::randn({4, 6});
  {
    H5File f(path, H5File::Mode::Create);
    f.write("a/b/c/transposed", base.t());
    f.write("replaced", torch::zeros({3}));
    f.write("replaced", torch::ones({2, 2}, torch::kInt64));
    CHECK_THROWS_WITH(f.write("half", torch::zeros({2}, torch::kHalf)), Contains("not supported"));
    CHECK_THROWS_WITH(f.write("replaced/child", torch::zeros({1})), Contains("'replaced' is not a group"));
    CHECK_THROWS_WITH(f.write("a/b", torch::zeros({1})), Contains("a group of that name exists"));
  }
  const H5File f(path, H5File::Mode::Read);
  CHECK(torch::equal(f.read("a/b/c/transposed"), base.t()));
  CHECK(torch::equal(f.read("/a/b/c/transposed"), base.t()));
  CHECK(torch::equal(f.read("replaced"), torch::ones({2, 2}, torch::kInt64)));
  CHECK(f.has("a/b/c/transposed"));
  CHECK_FALSE(f.has("a/b"));  // a group, not a dataset
  CHECK_FALSE(f.has("a/x/y"));
  CHECK_FALSE(f.has("replaced/child"));
  CHECK_FALSE(f.has(""));
}

TEST_CASE("hdf5: read_rows reads a slab along the first dimension", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "rows.h5";
  const auto data = torch::arange(60, torch::kFloat64).reshape({10, 3, 2});
  const auto flags = torch::arange(10) % 3 == 0;
  {
    H5File f(path, H5File::Mode::Create);
    f.write("x", data);
    f.write("flags", flags);
  }
  const H5File f(path, H5File::Mode::Read);
  CHECK(torch::equal(f.read_rows("x", 2, 5), data.slice(0, 2, 5)));
  CHECK(torch::equal(f.read_rows("x", 0, 10), data));
  CHECK(torch::equal(f.read_rows("flags", 3, 7), flags.slice(0, 3, 7)));
  const auto none = f.read_rows("x", 4, 4);
  CHECK(none.sizes() == torch::IntArrayRef({0, 3, 2}));
  CHECK(none.scalar_type() == torch::kFloat64);
  CHECK_THROWS_WITH(f.read_rows("x", 8, 11), Contains(path.string()) && Contains("out of range"));
  CHECK_THROWS(f.read_rows("x", -1, 2));
  CHECK_THROWS(f.read_rows("x", 5, 4));
}

TEST_CASE("hdf5: root attributes", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "attrs.h5";
  {
    H5File f(path, H5File::Mode::Create);
    f.set_attr("task", std::string("classification"));
    f.set_attr("classes", int64_t{10});
    f.set_attr("classes", int64_t{-(int64_t{1} << 40)});  // replaces
    f.set_attr("empty", std::string());
    f.set_attr("utf8", std::string("caf\xc3\xa9"));
  }
  const H5File f(path, H5File::Mode::Read);
  CHECK(f.attr_string("task") == "classification");
  CHECK(f.attr_int("classes") == -(int64_t{1} << 40));
  CHECK(f.attr_string("empty").empty());
  CHECK(f.attr_string("utf8") == "caf\xc3\xa9");
  CHECK(f.has_attr("task"));
  CHECK_FALSE(f.has_attr("nope"));
  CHECK_THROWS_WITH(f.attr_int("task"), Contains(path.string()) && Contains("'task'") && Contains("not a single integer"));
  CHECK_THROWS_WITH(f.attr_string("classes"), Contains("'classes'") && Contains("not a single string"));
  CHECK_THROWS_WITH(f.attr_string("nope"), Contains(path.string()) && Contains("no attribute 'nope'"));
}

TEST_CASE("hdf5: missing files and datasets and corrupt files give clear errors", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto missing = dir.path / "missing.h5";
  CHECK_THROWS_WITH(H5File(missing, H5File::Mode::Read), "HDF5 file not found: " + missing.string());

  const auto path = dir.path / "data.h5";
  { H5File(path, H5File::Mode::Create).write("train/labels", torch::zeros({4}, torch::kInt64)); }
  const H5File f(path, H5File::Mode::Read);
  CHECK_THROWS_WITH(f.read("train/images"), Contains(path.string()) && Contains("no dataset 'train/images'"));
  CHECK_THROWS_WITH(f.read_rows("train/images", 0, 1), Contains("no dataset 'train/images'"));
  CHECK_THROWS_WITH(f.shape("train"), Contains("no dataset 'train'"));

  const auto noise = dir.path / "noise.h5";
  {
    std::mt19937 rng(7);
    std::ofstream out(noise, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(rng()));
  }
  CHECK_THROWS_WITH(H5File(noise, H5File::Mode::Read),
                    Contains(noise.string() + " is not a readable HDF5 file (corrupt or wrong format)"));

  const auto cut = dir.path / "cut.h5";
  write_dataset_file(cut);
  fs::resize_file(cut, fs::file_size(cut) / 2);
  CHECK_THROWS_WITH(H5File(cut, H5File::Mode::Read),
                    Contains(cut.string() + " is not a readable HDF5 file (corrupt or wrong format)"));

  const auto empty = dir.path / "empty.h5";
  std::ofstream(empty).close();
  CHECK_THROWS_WITH(H5File(empty, H5File::Mode::Read), Contains("not a readable HDF5 file"));

  CHECK_THROWS_WITH(H5File(dir.path / "no_such_dir" / "x.h5", H5File::Mode::Create), Contains("cannot create"));
}

TEST_CASE("hdf5: write_h5_atomically", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "out.h5";

  SECTION("success leaves exactly the target") {
    ef::write_h5_atomically(path, [](H5File& f) {
      f.write("x", torch::arange(5));
      f.set_attr("schema_version", int64_t{1});
    });
    CHECK(entries(dir.path) == std::vector<std::string>{"out.h5"});
    CHECK(torch::equal(H5File(path, H5File::Mode::Read).read("x"), torch::arange(5)));
  }
  SECTION("a throwing fill leaves no file") {
    CHECK_THROWS_WITH(ef::write_h5_atomically(path,
                                              [](H5File& f) {
                                                f.write("x", torch::arange(5));
                                                throw std::runtime_error("fill failed");
                                              }),
                      "fill failed");
    CHECK(entries(dir.path).empty());
  }
  SECTION("a throwing fill keeps an existing file intact") {
    write_dataset_file(path);
    const auto before = fs::file_size(path);
    CHECK_THROWS(ef::write_h5_atomically(path, [](H5File& f) {
      f.write("train/images", torch::zeros({1}));
      throw std::runtime_error("fill failed");
    }));
    CHECK(entries(dir.path) == std::vector<std::string>{"out.h5"});
    CHECK(fs::file_size(path) == before);
    const H5File f(path, H5File::Mode::Read);
    CHECK(f.shape("train/images") == std::vector<int64_t>{1000, 200});
    CHECK(f.attr_int("schema_version") == 3);
  }
}

TEST_CASE("hdf5: require_schema", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "s.h5";
  write_dataset_file(path);
  const H5File f(path, H5File::Mode::Read);
  CHECK_NOTHROW(ef::require_schema(f, 3));
  CHECK_THROWS_WITH(ef::require_schema(f, 4), Contains(path.string()) && Contains("schema_version is 3, expected 4"));

  const auto bare = dir.path / "bare.h5";
  { H5File g(bare, H5File::Mode::Create); }
  CHECK_THROWS_WITH(ef::require_schema(H5File(bare, H5File::Mode::Read), 1),
                    Contains(bare.string()) && Contains("missing root attribute 'schema_version'"));
}

TEST_CASE("hdf5: H5File moves and closes", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "m.h5";
  H5File a(path, H5File::Mode::Create);
  a.write("x", torch::ones({2}));
  H5File b = std::move(a);
  CHECK(b.path() == path);
  CHECK(b.has("x"));
  b.close();
  CHECK_THROWS_WITH(b.read("x"), Contains("closed"));
  H5File c(path, H5File::Mode::Read);  // readable now that b closed it
  CHECK(torch::equal(c.read("x"), torch::ones({2})));
}

TEST_CASE("hdf5: concurrent reads from several threads", "[hdf5]") {
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "shared.h5";
  write_dataset_file(path);
  const auto expected = torch::arange(200000, torch::kInt32).reshape({1000, 200});
  const H5File shared(path, H5File::Mode::Read);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&, t] {
      const H5File own(path, H5File::Mode::Read);  // threads may also open their own handle
      for (int i = 0; i < 50; ++i) {
        const int64_t begin = (t * 50 + i * 7) % 990;
        const auto& file = i % 2 == 0 ? shared : own;
        if (!torch::equal(file.read_rows("train/images", begin, begin + 10), expected.slice(0, begin, begin + 10))) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK(mismatches == 0);
}

TEST_CASE("hdf5: datasets and attributes written by other tools", "[hdf5]") {
  // What h5py/numpy write: a bool enum, uint16 data, a fixed-length string attribute.
  ef::test::ScratchDir dir("hdf5");
  const auto path = dir.path / "foreign.h5";
  {
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t n = 4;
    const hid_t space = H5Screate_simple(1, &n, nullptr);

    const hid_t boolean = H5Tenum_create(H5T_NATIVE_INT8);
    signed char no = 0, yes = 1;
    H5Tenum_insert(boolean, "FALSE", &no);
    H5Tenum_insert(boolean, "TRUE", &yes);
    const signed char flags[4] = {0, 1, 1, 0};
    const hid_t bools = H5Dcreate2(file, "flags", boolean, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(bools, boolean, H5S_ALL, H5S_ALL, H5P_DEFAULT, flags);

    const uint16_t depth[4] = {0, 1, 40000, 65535};
    const hid_t words = H5Dcreate2(file, "depth", H5T_STD_U16LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(words, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, depth);

    const hid_t fixed = H5Tcopy(H5T_C_S1);
    H5Tset_size(fixed, 8);
    const hid_t scalar = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(file, "name", fixed, scalar, H5P_DEFAULT, H5P_DEFAULT);
    const char text[8] = {'c', 'i', 'f', 'a', 'r', '\0', '\0', '\0'};
    H5Awrite(attr, fixed, text);

    H5Aclose(attr);
    H5Sclose(scalar);
    H5Tclose(fixed);
    H5Dclose(words);
    H5Dclose(bools);
    H5Tclose(boolean);
    H5Sclose(space);
    H5Fclose(file);
  }
  const H5File f(path, H5File::Mode::Read);
  const auto flags = f.read("flags");
  CHECK(flags.scalar_type() == torch::kBool);
  CHECK(torch::equal(flags, torch::tensor({false, true, true, false})));
  const auto depth = f.read("depth");
  CHECK(depth.scalar_type() == torch::kInt32);
  CHECK(torch::equal(depth, torch::tensor({0, 1, 40000, 65535}, torch::kInt32)));
  CHECK(f.attr_string("name") == "cifar");
}
