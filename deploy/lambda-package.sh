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

rm -rf build/lambda build/lambda-wheel build/actionrunner-lambda.zip
mkdir -p build/lambda build/lambda-wheel
"$python" -m pip wheel --quiet --no-deps --wheel-dir build/lambda-wheel .
"$python" -m pip install --quiet --target build/lambda \
  --platform "manylinux_2_28_$machine" --platform "manylinux2014_$machine" \
  --implementation cp --python-version "$version" --only-binary=:all: \
  build/lambda-wheel/actionrunner-*.whl
(cd build/lambda && "$python" -m zipfile -c ../actionrunner-lambda.zip .)
echo "build/actionrunner-lambda.zip (Python $version, $arch; handler actionrunner.aws_lambda.handler)"
