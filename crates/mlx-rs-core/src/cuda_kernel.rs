//! MLX's CUDA custom kernels (`mx.fast.cuda_kernel`): a kernel body in
//! CUDA C++ that MLX compiles at run time (NVRTC) and runs inside its lazy
//! graph, like any other op.
//!
//! Design: a thin, safe-where-possible wrapper over mlx-c 0.7's
//! `mlx_fast_cuda_kernel_*` (our `mlx-sys`); `mlx-rs` 0.33 wraps only the
//! Metal twin. MLX writes the kernel's signature from the names given here:
//! each input `a` is a `const T* a` (`T` from the array's dtype), each
//! output a `T* out`, and each template argument a `constexpr int` or a
//! `using` type alias at the top of the body. The grid counts threads, as
//! in Metal: MLX launches `ceil(grid / thread_group)` blocks. Kernels run
//! only on a CUDA GPU; elsewhere making or applying one is an error (MLX
//! builds without CUDA refuse to make one). Compile errors
//! surface, with NVRTC's log, from the `eval` that first runs the kernel.

use std::ffi::{c_char, CString};

use mlx_rs::{Array, Dtype, Stream};

use crate::error::{Error, Result};

/// A compile-time constant of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateArg {
    /// `using NAME = <CUDA type of the dtype>;`
    Dtype(Dtype),
    /// `constexpr int NAME = value;`
    Int(i32),
    /// `constexpr bool NAME = value;`
    Bool(bool),
}

/// One launch of a [`CudaKernel`]: outputs, grid and constants.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Each output's shape and dtype, in the order of the output names.
    pub outputs: Vec<(Vec<i32>, Dtype)>,
    /// Threads in all, per dimension.
    pub grid: (i32, i32, i32),
    /// Threads per block, per dimension.
    pub thread_group: (i32, i32, i32),
    /// The kernel's compile-time constants, by name.
    pub template_args: Vec<(&'static str, TemplateArg)>,
}

/// A CUDA kernel body with named inputs and outputs (see the module notes).
pub struct CudaKernel {
    raw: mlx_sys::mlx_fast_cuda_kernel,
    inputs: usize,
    outputs: usize,
}

impl CudaKernel {
    /// A kernel called `name` over `inputs` and `outputs` (the names the
    /// body uses), with `header` placed before it (helper functions).
    /// Inputs that are not row-contiguous are copied to be so.
    pub fn new(
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        source: &str,
        header: &str,
    ) -> Result<Self> {
        crate::runtime::ensure_mlx_error_handler();
        let name = c_string(name)?;
        let source = c_string(source)?;
        let header = c_string(header)?;
        let input_names = StringVector::new(inputs)?;
        let output_names = StringVector::new(outputs)?;
        // SAFETY: every pointer is a live NUL-terminated string or mlx-c
        // vector for the duration of the call; mlx-c copies them.
        let raw = unsafe {
            mlx_sys::mlx_fast_cuda_kernel_new(
                name.as_ptr(),
                input_names.raw,
                output_names.raw,
                source.as_ptr(),
                header.as_ptr(),
                true,
                0,
            )
        };
        if raw.ctx.is_null() {
            return Err(kernel_error("creating a CUDA kernel"));
        }
        Ok(CudaKernel {
            raw,
            inputs: inputs.len(),
            outputs: outputs.len(),
        })
    }

    /// The kernel over `inputs`, as lazy arrays (compiled and run when they
    /// are evaluated, on the caller's stream; compile errors surface there).
    ///
    /// # Safety
    /// For these inputs and this launch, the body must read only inside the
    /// inputs, write only inside the outputs, write every output element,
    /// and never write an input.
    pub unsafe fn apply(&self, inputs: &[&Array], launch: &Launch) -> Result<Vec<Array>> {
        if inputs.len() != self.inputs || launch.outputs.len() != self.outputs {
            return Err(Error::InvalidArgument(format!(
                "CUDA kernel: {} inputs and {} outputs given, {} and {} named",
                inputs.len(),
                launch.outputs.len(),
                self.inputs,
                self.outputs
            )));
        }
        if !(cfg!(feature = "cuda") && crate::runtime::on_gpu()) {
            return Err(Error::InvalidArgument(
                "CUDA kernels run only on an NVIDIA GPU, with MLX's CUDA build \
                 (the `cuda` feature)"
                    .to_owned(),
            ));
        }
        // `new` installed mlx-rs's MLX error handler.
        let config = Config::new()?;
        for (shape, dtype) in &launch.outputs {
            config.check(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(
                config.raw,
                shape.as_ptr(),
                shape.len(),
                *dtype as mlx_sys::mlx_dtype,
            ))?;
        }
        let (gx, gy, gz) = launch.grid;
        config.check(mlx_sys::mlx_fast_cuda_kernel_config_set_grid(
            config.raw, gx, gy, gz,
        ))?;
        let (tx, ty, tz) = launch.thread_group;
        config.check(mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(
            config.raw, tx, ty, tz,
        ))?;
        for (name, arg) in &launch.template_args {
            let name = c_string(name)?;
            config.check(match *arg {
                TemplateArg::Dtype(dtype) => {
                    mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_dtype(
                        config.raw,
                        name.as_ptr(),
                        dtype as mlx_sys::mlx_dtype,
                    )
                }
                TemplateArg::Int(value) => {
                    mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(
                        config.raw,
                        name.as_ptr(),
                        value,
                    )
                }
                TemplateArg::Bool(value) => {
                    mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_bool(
                        config.raw,
                        name.as_ptr(),
                        value,
                    )
                }
            })?;
        }
        let raw_inputs: Vec<mlx_sys::mlx_array> = inputs.iter().map(|a| a.as_ptr()).collect();
        let input_vector =
            mlx_sys::mlx_vector_array_new_data(raw_inputs.as_ptr(), raw_inputs.len());
        let mut results = mlx_sys::mlx_vector_array_new();
        let stream = Stream::thread_local_or_default();
        let status = mlx_sys::mlx_fast_cuda_kernel_apply(
            &mut results,
            self.raw,
            input_vector,
            config.raw,
            stream.as_ptr(),
        );
        mlx_sys::mlx_vector_array_free(input_vector);
        if status != 0 {
            mlx_sys::mlx_vector_array_free(results);
            return Err(kernel_error("applying a CUDA kernel"));
        }
        let count = mlx_sys::mlx_vector_array_size(results);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let mut array = mlx_sys::mlx_array_new();
            if mlx_sys::mlx_vector_array_get(&mut array, results, i) != 0 {
                mlx_sys::mlx_array_free(array);
                mlx_sys::mlx_vector_array_free(results);
                return Err(kernel_error("reading a CUDA kernel's outputs"));
            }
            out.push(Array::from_ptr(array));
        }
        mlx_sys::mlx_vector_array_free(results);
        Ok(out)
    }
}

impl Drop for CudaKernel {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mlx_fast_cuda_kernel_new and is freed once.
        unsafe { mlx_sys::mlx_fast_cuda_kernel_free(self.raw) };
    }
}

impl std::fmt::Debug for CudaKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

/// mlx-c's launch configuration, freed on drop.
struct Config {
    raw: mlx_sys::mlx_fast_cuda_kernel_config,
}

impl Config {
    fn new() -> Result<Self> {
        // SAFETY: a fresh object, owned here.
        let raw = unsafe { mlx_sys::mlx_fast_cuda_kernel_config_new() };
        if raw.ctx.is_null() {
            return Err(kernel_error("creating a CUDA kernel configuration"));
        }
        Ok(Config { raw })
    }

    fn check(&self, status: i32) -> Result<()> {
        if status == 0 {
            Ok(())
        } else {
            Err(kernel_error("configuring a CUDA kernel launch"))
        }
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mlx_fast_cuda_kernel_config_new.
        unsafe { mlx_sys::mlx_fast_cuda_kernel_config_free(self.raw) };
    }
}

/// mlx-c's vector of strings, freed on drop.
struct StringVector {
    raw: mlx_sys::mlx_vector_string,
}

impl StringVector {
    fn new(values: &[&str]) -> Result<Self> {
        let owned = values
            .iter()
            .map(|value| c_string(value))
            .collect::<Result<Vec<_>>>()?;
        let mut pointers: Vec<*const c_char> = owned.iter().map(|value| value.as_ptr()).collect();
        // SAFETY: the pointers are live for the call; mlx-c copies them.
        let raw =
            unsafe { mlx_sys::mlx_vector_string_new_data(pointers.as_mut_ptr(), pointers.len()) };
        Ok(StringVector { raw })
    }
}

impl Drop for StringVector {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mlx_vector_string_new_data.
        unsafe { mlx_sys::mlx_vector_string_free(self.raw) };
    }
}

fn c_string(text: &str) -> Result<CString> {
    CString::new(text)
        .map_err(|_| Error::InvalidArgument(format!("CUDA kernel: {text:?} holds a NUL byte")))
}

fn kernel_error(what: &str) -> Error {
    Error::Mlx(mlx_rs::error::Exception::custom(format!("{what} failed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "const int i = blockIdx.x * blockDim.x + threadIdx.x;\n\
                        if (i < LEN) { out[i] = 2.0f * a[i] + float(PLUS); }";

    /// On MLX's CUDA build on a GPU the kernel runs (doubling, checked
    /// against Rust's sums); elsewhere making it is an error, not a crash.
    #[test]
    fn runs_on_a_cuda_gpu_and_is_an_error_elsewhere() {
        let kernel = CudaKernel::new("double_plus", &["a"], &["out"], BODY, "");
        if !(cfg!(feature = "cuda") && crate::runtime::on_gpu()) {
            let err = kernel.unwrap_err();
            assert!(err.to_string().contains("creating a CUDA kernel"), "{err}");
            return;
        }
        let kernel = kernel.expect("a kernel object");
        let values: Vec<f32> = (0..100).map(|i| i as f32 * 0.5 - 7.0).collect();
        let a = Array::from_slice(&values, &[100]);
        let launch = Launch {
            outputs: vec![(vec![100], Dtype::Float32)],
            grid: (100, 1, 1),
            thread_group: (32, 1, 1),
            template_args: vec![
                ("LEN", TemplateArg::Int(100)),
                ("PLUS", TemplateArg::Int(3)),
            ],
        };
        // SAFETY: 128 threads, those below 100 read a[i] and write out[i].
        let out = unsafe { kernel.apply(&[&a], &launch) }.expect("applies");
        let want: Vec<f32> = values.iter().map(|v| 2.0 * v + 3.0).collect();
        assert_eq!(out[0].as_slice::<f32>(), want.as_slice());
        // Counts that do not match the names are refused before MLX.
        let err = unsafe { kernel.apply(&[&a, &a], &launch) }.unwrap_err();
        assert!(err.to_string().contains("2 inputs"), "{err}");
    }
}
