#!/bin/sh
# Build the Lambda deployment package: actionrunner, this deployment's tasks/ and config/, and
# every dependency as wheels for Lambda's Linux (not this machine's).
#
#   deploy/lambda-package.sh [PYTHON_VERSION (3.12)] [x86_64|arm64]
#     -> build/actionrunner-lambda.zip; upload it to S3 and pass the bucket and key to
#        deploy/actionrunner-lambda.template.json (CodeS3Bucket, CodeS3Key, Runtime)
#
# Wheels are for glibc 2.28 (manylinux_2_28: pycurl, which kombu's SQS extra requires, ships no
# older Linux wheel): Lambda's python3.12 and later runtimes (Amazon Linux 2023).
#
# Every dependency is the pinned, hashed one of deploy/lambda.lock (scripts/lock), installed with
# --require-hashes; the package's wheel is built without build isolation in a throwaway venv
# whose pip and setuptools come from deploy/build.lock, hashes checked too.
set -eu
cd "$(dirname "$0")/.."

version="${1:-3.12}"
arch="${2:-x86_64}"
case "$arch" in
  x86_64) machine=x86_64 ;;
  arm64) machine=aarch64 ;;
  *) echo "lambda-package: architecture must be x86_64 or arm64, not $arch" >&2; exit 64 ;;
esac
python="$(command -v "${PYTHON:-python3}")"
case "$python" in /*) ;; *) python="$PWD/$python" ;; esac

rm -rf build/lambda build/lambda-wheel build/lambda-tools build/actionrunner-lambda.zip
mkdir -p build/lambda build/lambda-wheel
"$python" -m venv build/lambda-tools
tools=build/lambda-tools/bin/python
"$tools" -m pip install --quiet --require-hashes -r deploy/build.lock
"$tools" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir build/lambda-wheel .
"$tools" -m pip install --quiet --target build/lambda \
  --platform "manylinux_2_28_$machine" --platform "manylinux2014_$machine" \
  --implementation cp --python-version "$version" --only-binary=:all: \
  --require-hashes -r deploy/lambda.lock
"$tools" -m pip install --quiet --target build/lambda --no-deps build/lambda-wheel/actionrunner-*.whl
rm -rf build/lambda-tools
(cd build/lambda && "$python" -m zipfile -c ../actionrunner-lambda.zip .)
echo "build/actionrunner-lambda.zip (Python $version, $arch; handler actionrunner.aws_lambda.handler)"
