# dolfinx_nn on the official DOLFINx image (same DOLFINx API as the PyPI wheel we test with).
#   docker build -t dolfinx_nn .
#   docker run --rm -v "$PWD/results:/results" dolfinx_nn \
#       mpiexec -n 2 dolfinx-nn inverse --dim 2 --out /results/inverse
ARG DOLFINX_TAG=v0.11.0
FROM ghcr.io/fenics/dolfinx/dolfinx:${DOLFINX_TAG}

# CPU build of PyTorch (the default PyPI wheel bundles CUDA, several GB).
RUN python3 -m pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/dolfinx_nn
COPY . .
# No [dolfinx] extra: DOLFINx, PETSc, mpi4py and gmsh come with the image.
RUN python3 -m pip install --no-cache-dir ".[test]" \
    && python3 -c "from mpi4py import MPI; import dolfinx_nn; print('dolfinx_nn', dolfinx_nn.__version__)"

ENV OMP_NUM_THREADS=1
CMD ["dolfinx-nn", "--help"]
