// The process's thread pool (see qmm_pool.hpp).

#include "qmm_pool.hpp"

#include <algorithm>

namespace mlx_sys_qmm {

Pool& pool() {
  // Never destroyed: its detached workers outlive static destructors.
  static Pool* p = [] {
    unsigned hw = std::thread::hardware_concurrency();
    int threads = std::clamp<int>(hw == 0 ? 1 : static_cast<int>(hw), 1, 16);
    return new Pool(threads - 1);
  }();
  return *p;
}

}  // namespace mlx_sys_qmm
